"""Layer configs (immutable, validated) and layer runtime state (setup / forward / backward).

A layer type is a pair defined in one file: a frozen dataclass `XxxConfig(LayerConfig)` holding the
YAML fields and trait flags, and a `XxxLayer(Layer)` holding buffers, with `_forward_cpu` /
`_forward_gpu` (and `_backward_*`) paths side by side. The net reads the traits, never the type:
is_source (sets the batch size), is_sink (takes no tops; closed when a run ends, discarded when
it fails), has_param and can_do_bp (which layers run backward), has_loss (what the net sums).
Mocha's has_neuron and has_stats are not traits here: a layer with a neuron applies it in its own
(fused) kernels and keeps its input for backward itself, so the net has nothing to do for it; and
the only statistics layers report are their losses.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from mochapy.blob import Blob
from mochapy.errors import ConfigError
from mochapy.limits import check_array
from mochapy.neurons import Neuron, make_neuron
from mochapy.params import (
    Constraint,
    Initializer,
    Param,
    ParamSpec,
    ParamStore,
    Regularizer,
    parse_component,
)

LAYER_TYPES: dict[str, type[LayerConfig]] = {}


def register_layer(config_cls: type[LayerConfig]) -> type[LayerConfig]:
    """Class decorator: make a config class known to YAML under its `type_name`."""
    LAYER_TYPES[config_cls.type_name] = config_cls
    return config_cls


@dataclass(frozen=True)
class LayerConfig:
    """What a YAML layer entry declares. Subclasses add fields and set the trait flags."""

    name: str
    bottoms: tuple[str, ...] = ()
    tops: tuple[str, ...] = ()

    type_name: ClassVar[str] = ""
    layer_class: ClassVar[type[Layer]]
    is_source: ClassVar[bool] = False  # produces data from outside: the net's batch size
    is_sink: ClassVar[bool] = False  # where blobs leave the net (a loss, an output): no tops
    has_param: ClassVar[bool] = False
    can_do_bp: ClassVar[bool] = False
    has_loss: ClassVar[bool] = False  # its loss_value counts in the net's loss
    # How many bottoms/tops the type takes: an exact count, or (min, None) for "at least min";
    # a sink's tops are 0 whatever n_tops says.
    n_bottoms: ClassVar[int | tuple[int, None]] = 1
    n_tops: ClassVar[int | tuple[int, None]] = 1

    @property
    def where(self) -> str:
        return f"layer {self.name!r} ({self.type_name})"

    def validate(self) -> None:
        """Check counts and field values; subclasses extend with their own rules."""
        for label, have, want in (
            ("bottoms", len(self.bottoms), self.n_bottoms),
            ("tops", len(self.tops), 0 if self.is_sink else self.n_tops),
        ):
            if isinstance(want, tuple):
                if have < want[0]:
                    raise ConfigError(f"{self.where}: needs at least {want[0]} {label}, has {have}")
            elif have != want:
                raise ConfigError(f"{self.where}: needs exactly {want} {label}, has {have}")
        for blob in (*self.bottoms, *self.tops):
            if not blob:
                raise ConfigError(f"{self.where}: blob names must be non-empty strings")

    def require(self, condition: bool, field_name: str, message: str) -> None:
        if not condition:
            raise ConfigError(f"{self.where}: field {field_name!r} {message}")

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], where: str) -> LayerConfig:
        """Build and validate a config from a YAML mapping, rejecting unknown fields."""
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        name = mapping.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: every layer needs a non-empty string 'name'")
        label = f"{where} layer {name!r} ({cls.type_name})"
        values = {}
        for key, raw in mapping.items():
            if key == "type":
                continue
            if key not in fields:
                known = ", ".join(sorted(k for k in fields if k != "name"))
                raise ConfigError(f"{label}: unknown field {key!r}; known: {known}")
            values[key] = convert_field(raw, hints[key], f"{label}: field {key!r}")
        missing = [
            f.name
            for f in fields.values()
            if f.name not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"{label}: missing required field {missing[0]!r}")
        config = cls(**values)
        try:
            config.validate()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return config


def convert_field(raw: Any, hint: Any, where: str) -> Any:
    """Convert one YAML value to the annotated type, with a one-line error naming the field."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return convert_field(raw, inner, where)
    if origin is Literal:
        if raw not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}, got {raw!r}")
        return raw
    if origin is tuple:
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            raw = [raw]
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {raw!r}")
        return tuple(convert_field(item, args[0], where) for item in raw)
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where} must be true or false, got {raw!r}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int) and not (
            isinstance(raw, float) and raw.is_integer()
        ):
            raise ConfigError(f"{where} must be an integer, got {raw!r}")
        return int(raw)
    if hint is float:
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(f"{where} must be a number, got {raw!r}")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{where} must be a string, got {raw!r}")
        return raw
    if hint is Neuron:
        return make_neuron(raw, where)
    if hint in (Initializer, Regularizer, Constraint):
        return parse_component(hint, raw, where)
    raise TypeError(f"unsupported field annotation {hint!r}")  # a bug in a layer definition


class NetContext:
    """What a layer may ask of the net it is set up in."""

    def __init__(
        self,
        backend: Any,
        params: ParamStore,
        seed: int,
        batch_size: int,
        phase: str,
        memory_data: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.backend = backend
        self.params = params
        self.seed = seed
        self.batch_size = batch_size
        self.phase = phase
        self.memory_data = memory_data or {}

    def rng(self, layer_name: str) -> np.random.Generator:
        """A generator private to one layer, fixed by the net's seed and the layer's name."""
        sequence = np.random.SeedSequence([self.seed, zlib.crc32(layer_name.encode()), 7])
        return np.random.Generator(np.random.PCG64(sequence))


class Layer:
    """Runtime state of one layer: owns its top blobs and work buffers.

    The net hands `bottoms` in (their `diff` is None where no gradient is wanted) and reads `tops`.
    """

    def __init__(self, config: LayerConfig, ctx: NetContext, bottoms: list[Blob]) -> None:
        self.config = config
        self.ctx = ctx
        self.backend = ctx.backend
        self.bottoms = bottoms
        self.tops: list[Blob] = []
        self.params: list[Param] = []
        self.loss_value: Any = None
        self.setup()

    # -- life cycle ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Check bottom shapes, create tops and buffers, declare parameters."""

    def forward(self) -> None:
        getattr(self, f"_forward_{self.backend.kind}")()

    def backward(self) -> None:
        getattr(self, f"_backward_{self.backend.kind}")()

    # -- helpers for subclasses ---------------------------------------------------------------
    def make_top(self, name: str, shape: tuple[int, ...]) -> Blob:
        # data and gradient: a size from the YAML is refused before it exhausts the memory
        check_array(shape, self.backend.dtype.itemsize, f"{self.config.where}: blob {name!r}", 2)
        blob = Blob(name, self.backend.zeros(shape))
        self.tops.append(blob)
        return blob

    def declare_param(
        self, suffix: str, shape: tuple[int, ...], spec: ParamSpec, key: str
    ) -> Param:
        param = self.ctx.params.declare(f"{key}.{suffix}", shape, spec, self.config.where)
        self.params.append(param)
        return param

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.config.where}: {message}")

    def close(self) -> None:
        """A sink's end of a run: whatever it wrote appears now, whole (nothing by default)."""

    def discard(self) -> None:
        """A sink's failed run: drop what it wrote so far (nothing by default)."""

    @property
    def loss(self) -> float:
        """The layer's loss as a host float (synchronises the device)."""
        if self.loss_value is None:
            return 0.0
        return float(self.backend.to_host(self.loss_value).reshape(-1)[0])

    def state_dict(self) -> dict[str, np.ndarray]:
        """Runtime state to snapshot (RNG and data positions); parameters are saved by the net."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state_dict` returned."""


@dataclass(frozen=True)
class AxisConfig(LayerConfig):
    """A layer that cuts or joins its blobs along one non-batch axis (Concat, Slice)."""

    axis: int = 1  # counted with the batch axis as 0
    can_do_bp = True

    def validate(self) -> None:
        super().validate()
        self.require(self.axis >= 1, "axis", "must be 1 or more (axis 0 is the batch)")


def along_axis(axis: int, start: int, stop: int) -> tuple[slice, ...]:
    """The index of [start, stop) along `axis`, all of every axis before it (Concat, Slice)."""
    return (slice(None),) * axis + (slice(start, stop),)


def rng_state(rng: np.random.Generator) -> np.ndarray:
    """A generator's full state as a uint8 array (HDF5-friendly), for bit-identical resume."""
    return np.frombuffer(json.dumps(rng.bit_generator.state).encode(), dtype=np.uint8).copy()


def set_rng_state(rng: np.random.Generator, state: np.ndarray) -> None:
    rng.bit_generator.state = json.loads(bytes(np.asarray(state, dtype=np.uint8)).decode())
