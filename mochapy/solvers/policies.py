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
    decay_on_validation: base * gamma^k, k = validations that did not improve the best value
    (a count of the run's, which the solver holds and snapshots: a config stays a config).
    """

    type: str = "fixed"
    gamma: float = 1.0
    stepsize: int = 1
    power: float = 1.0
    stages: list[tuple[int, LRPolicy]] = field(default_factory=list)

    TYPES = ("fixed", "step", "exp", "inv", "staged", "decay_on_validation")

    def rate(self, base_lr: float, iteration: int, decays: int = 0) -> float:
        """The lr at `iteration`, after `decays` cuts on validation (decay_on_validation)."""
        if self.type == "fixed":
            return base_lr
        if self.type == "step":
            return base_lr * self.gamma ** (iteration // self.stepsize)
        if self.type == "exp":
            return base_lr * self.gamma**iteration
        if self.type == "inv":
            return base_lr * (1 + self.gamma * iteration) ** (-self.power)
        if self.type == "decay_on_validation":
            return base_lr * self.gamma**decays
        start = 0
        for index, (until, policy) in enumerate(self.stages):
            if iteration < until or index == len(self.stages) - 1:
                return policy.rate(base_lr, iteration - start)
            start = until
        raise AssertionError("unreachable: staged policies have at least one stage")

    def cuts_after(self, loss: float, previous_best: float | None) -> bool:
        """Whether a validation loss cuts the lr once more: decay_on_validation, and the loss is
        not finite or no better than the best before it."""
        return self.type == "decay_on_validation" and previous_best is not None and (
            not math.isfinite(loss) or loss >= previous_best
        )


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


def _parse(cls: type, spec: Any, where: str, span: int | None = None) -> Any:
    """A policy from YAML; `span`: how many iterations it runs for (a stage of a staged
    policy), None when unbounded."""
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
    _check_sense(cls, kind, values, where, span)
    if kind == "staged":
        stages = spec.get("stages")
        if not isinstance(stages, list) or not stages:
            raise ConfigError(f"{where}.stages: expected a list of [until_iter, policy] pairs")
        parsed: list[tuple[int, LRPolicy]] = []
        for i, stage in enumerate(stages):
            if not (isinstance(stage, list) and len(stage) == 2 and isinstance(stage[0], int)):
                raise ConfigError(f"{where}.stages[{i}]: expected [until_iter, policy]")
            if stage[0] <= (parsed[-1][0] if parsed else 0):
                raise ConfigError(f"{where}.stages[{i}]: until_iter {stage[0]} must be positive "
                                  "and larger than the stage before's")
            last = i == len(stages) - 1  # it runs on for every iteration past its end
            span = None if last else stage[0] - (parsed[-1][0] if parsed else 0)
            parsed.append((stage[0], _parse(LRPolicy, stage[1], f"{where}.stages[{i}]", span)))
        values["stages"] = parsed
    return cls(**values)


def _check_sense(cls: type, kind: str, values: dict[str, Any], where: str,
                 span: int | None) -> None:
    """Refuse parameters that make a policy meaningless: a learning rate that grows without
    bound or overflows (growth is allowed only for a stage of a staged policy, while it stays
    finite: a warm-up), changes sign or becomes complex; a momentum of 1 or more."""
    gamma, power = values.get("gamma", 1.0), values.get("power", 1.0)
    if cls is LRPolicy and kind in ("step", "exp", "decay_on_validation"):
        if gamma <= 0:
            raise ConfigError(f"{where}.gamma: must be positive for the {kind} policy (the "
                              f"factor the learning rate is multiplied by), got {gamma}")
        if gamma > 1 and (span is None or kind == "decay_on_validation"):
            raise ConfigError(f"{where}.gamma: {gamma} > 1 makes the learning rate grow without "
                              "bound; use it only in a stage of a staged policy")
        steps = (span - 1) // (values.get("stepsize", 1) if kind == "step" else 1) if span else 0
        try:
            math.pow(gamma, steps)
        except OverflowError:
            raise ConfigError(f"{where}.gamma: the learning rate overflows within the stage "
                              f"({gamma}^{steps})") from None
    if cls is LRPolicy and kind == "inv" and (gamma < 0 or power < 0):
        raise ConfigError(f"{where}: the inv policy needs gamma >= 0 and power >= 0 (else the "
                          f"learning rate grows or turns negative), got gamma {gamma}, "
                          f"power {power}")
    if cls is MomPolicy:
        if not 0 <= values.get("max_mom", 0.99) < 1:
            raise ConfigError(f"{where}.max_mom: must be in [0, 1)")
        if kind == "step" and gamma <= 0 or kind == "linear" and gamma < 0:
            raise ConfigError(f"{where}.gamma: must be positive for the {kind} policy, "
                              f"got {gamma}")


def parse_lr_policy(spec: Any, where: str) -> LRPolicy:
    return _parse(LRPolicy, spec, where)


def parse_mom_policy(spec: Any, where: str) -> MomPolicy:
    return _parse(MomPolicy, spec, where)
