"""What a coffee break is, what it sees, and how the YAML's `coffee_breaks` section composes them.

A break sees a BreakContext (as Mocha hands a break the lounge, the net and the solver), never
the trainer, so coffee stays below training in the import graph. Break kinds register under the
name the YAML uses; `compose_breaks` builds the ones a config declares.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mochapy.coffee.lounge import CoffeeLounge
from mochapy.errors import ConfigError, require_int
from mochapy.layers import LayerConfig

if TYPE_CHECKING:
    from mochapy.net import Net


@dataclass(frozen=True)
class ValidationConfig:
    every: int
    source: str
    data_layer: str
    batch_size: int = 0
    max_batches: int = 0
    keep_best: bool = False  # keep a snapshot of the lowest validation loss, never pruned


@dataclass(frozen=True)
class CoffeeConfig:
    summary_every: int = 100
    snapshot_every: int = 1000
    keep_snapshots: int = 3
    validation: ValidationConfig | None = None


class SolverState(Protocol):
    """What a break may ask of the solver: its lr now, and to hear of a validation loss (the lr
    policy, e.g. decay_on_validation, then decides on a cut held in the solver's own state)."""

    def learning_rate(self) -> float: ...

    def validated(self, loss: float, previous_best: float | None) -> None: ...


@dataclass(frozen=True)
class BreakContext:
    """All a break may see and do: the training net, the lounge, the log, the solver's state,
    and the run's few services (each a callable, so the context is built once per run)."""

    net: Net
    lounge: CoffeeLounge
    log: Callable[[str], None]
    solver: SolverState
    snapshot: Callable[[], str]  # writes a verified snapshot, returns its path
    snapshot_best: Callable[[], str]  # writes it as the run's best snapshot, returns its path
    take_mean_loss: Callable[[], float]  # the mean training loss since the last call
    iters_per_sec: Callable[[], float]  # this session's speed
    validation_net: Callable[[], Net]  # the test-phase net over the validation source


class CoffeeBreak(ABC):
    """Something done every `every` iterations; subclasses say what in `run`."""

    fields: ClassVar[tuple[str, ...]] = ("every",)  # what the YAML may set in its section

    def __init__(self, every: int) -> None:
        self.every = every

    def due(self, iteration: int) -> bool:
        return iteration % self.every == 0

    @classmethod
    @abstractmethod
    def from_config(cls, coffee: CoffeeConfig) -> CoffeeBreak | None:
        """This kind's break as the config declares it; None when the config has none."""

    @classmethod
    @abstractmethod
    def settings(cls, body: dict[str, Any], label: str, every: int,
                 layers: list[LayerConfig]) -> dict[str, Any]:
        """The CoffeeConfig fields this kind's YAML section (`body`, checked against `fields`)
        sets; ConfigError naming `label` on a bad value."""

    @abstractmethod
    def run(self, context: BreakContext, iteration: int) -> None: ...


# YAML name -> break kind, in the order the breaks due at one iteration run (registration order).
COFFEE_BREAKS: dict[str, type[CoffeeBreak]] = {}


def register_break(name: str) -> Callable[[type[CoffeeBreak]], type[CoffeeBreak]]:
    """Class decorator: the kind becomes `coffee_breaks.<name>` in the YAML."""

    def decorate(cls: type[CoffeeBreak]) -> type[CoffeeBreak]:
        COFFEE_BREAKS[name] = cls
        return cls

    return decorate


def compose_breaks(coffee: CoffeeConfig) -> list[CoffeeBreak]:
    """The breaks a config declares, in the registry's order."""
    declared = (kind.from_config(coffee) for kind in COFFEE_BREAKS.values())
    return [coffee_break for coffee_break in declared if coffee_break is not None]


def parse_coffee(spec: Any, where: str, layers: list[LayerConfig]) -> CoffeeConfig:
    """The YAML's `coffee_breaks` mapping, checked against the registered kinds' fields."""
    if spec is None:
        return CoffeeConfig()
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: 'coffee_breaks' must be a mapping")
    values: dict[str, Any] = {}
    for key, body in spec.items():
        if key not in COFFEE_BREAKS:
            raise ConfigError(
                f"{where}: coffee_breaks: unknown break {key!r}; known: {', '.join(COFFEE_BREAKS)}"
            )
        label = f"{where}: coffee_breaks.{key}"
        if body is None:
            continue  # dropped (e.g. by a stage's `set: {coffee_breaks.validation: null}`)
        if not isinstance(body, dict):
            raise ConfigError(f"{label}: expected a mapping")
        unknown = set(body) - set(COFFEE_BREAKS[key].fields)
        if unknown:
            raise ConfigError(f"{label}: unknown field {sorted(unknown, key=str)[0]!r}")
        every = require_int(body.get("every"), f"{label}.every", 1)
        values.update(COFFEE_BREAKS[key].settings(body, label, every, layers))
    return CoffeeConfig(**values)

