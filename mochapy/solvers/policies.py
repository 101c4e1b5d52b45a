"""Learning-rate and momentum policies (Mocha's LRPolicy / MomPolicy), parsed from YAML."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mochapy.errors import ConfigError


@dataclass
class LRPolicy:
    """lr(iteration) for fixed/step/exp/inv/staged/decay_on_validation.

    step: base * gamma^floor(it / stepsize); exp: base * gamma^it;
    inv: base * (1 + gamma * it)^-power; staged: a list of [until_iter, policy] stages;
    decay_on_validation: base * gamma^k, k = validations that did not improve the best value.
    """

    type: str = "fixed"
    gamma: float = 1.0
    stepsize: int = 1
    power: float = 1.0
    stages: list[tuple[int, LRPolicy]] = field(default_factory=list)
    decays: int = 0  # decay_on_validation: how many times the lr has been cut

    TYPES = ("fixed", "step", "exp", "inv", "staged", "decay_on_validation")

    def rate(self, base_lr: float, iteration: int) -> float:
        if self.type == "fixed":
            return base_lr
        if self.type == "step":
            return base_lr * self.gamma ** (iteration // self.stepsize)
        if self.type == "exp":
            return base_lr * self.gamma**iteration
        if self.type == "inv":
            return base_lr * (1 + self.gamma * iteration) ** (-self.power)
        if self.type == "decay_on_validation":
            return base_lr * self.gamma**self.decays
        start = 0
        for index, (until, policy) in enumerate(self.stages):
            if iteration < until or index == len(self.stages) - 1:
                return policy.rate(base_lr, iteration - start)
            start = until
        raise AssertionError("unreachable: staged policies have at least one stage")


@dataclass
class MomPolicy:
    """momentum(iteration): fixed, or step/linear growth from base towards `max_mom`."""

    type: str = "fixed"
    gamma: float = 1.0
    stepsize: int = 1
    max_mom: float = 0.99

    TYPES = ("fixed", "step", "linear")

    def momentum(self, base: float, iteration: int) -> float:
        if self.type == "fixed":
            return base
        k = iteration // self.stepsize
        value = base * self.gamma**k if self.type == "step" else base + self.gamma * k
        return min(value, self.max_mom)


NUMBER_FIELDS = {"gamma": float, "stepsize": int, "power": float, "max_mom": float}


def _parse(cls: type, spec: Any, where: str) -> Any:
    if spec is None:
        return cls()
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a policy name or mapping, got {spec!r}")
    kind = spec.get("type", "fixed")
    if kind not in cls.TYPES:
        raise ConfigError(f"{where}: unknown policy {kind!r}; known: {', '.join(cls.TYPES)}")
    allowed = {f for f in cls.__dataclass_fields__ if f in NUMBER_FIELDS}
    values: dict[str, Any] = {"type": kind}
    for key, raw in spec.items():
        if key == "type" or (key == "stages" and cls is LRPolicy):
            continue
        if key not in allowed:
            raise ConfigError(f"{where}: unknown field {key!r}; known: type, {', '.join(allowed)}")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ConfigError(f"{where}.{key}: expected a number, got {raw!r}")
        values[key] = NUMBER_FIELDS[key](raw)
    if values.get("stepsize", 1) <= 0:
        raise ConfigError(f"{where}.stepsize: must be a positive integer")
    if kind == "staged":
        stages = spec.get("stages")
        if not isinstance(stages, list) or not stages:
            raise ConfigError(f"{where}.stages: expected a list of [until_iter, policy] pairs")
        parsed = []
        for i, stage in enumerate(stages):
            if not (isinstance(stage, list) and len(stage) == 2 and isinstance(stage[0], int)):
                raise ConfigError(f"{where}.stages[{i}]: expected [until_iter, policy]")
            parsed.append((stage[0], _parse(LRPolicy, stage[1], f"{where}.stages[{i}]")))
        values["stages"] = parsed
    return cls(**values)


def parse_lr_policy(spec: Any, where: str) -> LRPolicy:
    return _parse(LRPolicy, spec, where)


def parse_mom_policy(spec: Any, where: str) -> MomPolicy:
    return _parse(MomPolicy, spec, where)
