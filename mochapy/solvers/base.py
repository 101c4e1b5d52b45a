"""Solvers: update a net's flat parameter buffer from its flat gradient buffer.

A solver owns its state (momenta, Adam moments, iteration count) as flat arrays, so snapshots and
each backend's single update kernel handle every parameter at once. Regularization (regu_coef
times each parameter's regularizer) is added to the gradient in that kernel, as in Mocha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mochapy.backends.interface import SolverStep
from mochapy.backends.plan import segment_table
from mochapy.errors import ConfigError
from mochapy.net import Net
from mochapy.solvers.policies import LRPolicy, MomPolicy, parse_lr_policy, parse_mom_policy


@dataclass
class SolverConfig:
    method: str = "adam"
    base_lr: float = 0.001
    lr_policy: LRPolicy = field(default_factory=LRPolicy)
    momentum: float = 0.9
    mom_policy: MomPolicy = field(default_factory=MomPolicy)
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    max_iter: int = 1000
    regu_coef: float = 0.0
    max_seconds: float = 0.0  # > 0: also stop after this much training wall time

    NUMBERS: ClassVar[dict[str, type]] = {
        "base_lr": float, "momentum": float, "beta1": float, "beta2": float,
        "epsilon": float, "max_iter": int, "regu_coef": float, "max_seconds": float,
    }

    @classmethod
    def from_mapping(cls, spec: dict[str, Any], where: str) -> SolverConfig:
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: 'solver' must be a mapping")
        values: dict[str, Any] = {}
        for key, raw in spec.items():
            if key == "method":
                if not isinstance(raw, str) or raw not in SOLVERS:
                    raise ConfigError(
                        f"{where}.method: unknown solver {raw!r}; known: {', '.join(SOLVERS)}"
                    )
                values[key] = raw
            elif key == "lr_policy":
                values[key] = parse_lr_policy(raw, f"{where}.lr_policy")
            elif key == "mom_policy":
                values[key] = parse_mom_policy(raw, f"{where}.mom_policy")
            elif key in cls.NUMBERS:
                if isinstance(raw, str):
                    try:
                        raw = float(raw)
                    except ValueError:
                        pass
                kind = cls.NUMBERS[key]
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not (
                    math.isfinite(raw) and (kind is float or raw == int(raw))
                ):
                    raise ConfigError(f"{where}.{key}: expected a number, got {raw!r}")
                values[key] = kind(raw)
            else:
                known = ", ".join(["method", "lr_policy", "mom_policy", *cls.NUMBERS])
                raise ConfigError(f"{where}: unknown field {key!r}; known: {known}")
        config = cls(**values)
        if config.base_lr <= 0 or min(config.max_iter, config.regu_coef, config.max_seconds) < 0:
            raise ConfigError(
                f"{where}: base_lr must be > 0; max_iter, regu_coef, max_seconds >= 0"
            )
        if not (0 <= config.beta1 < 1 and 0 <= config.beta2 < 1 and config.epsilon > 0):
            raise ConfigError(f"{where}: need 0 <= beta1, beta2 < 1 and epsilon > 0")
        return config


class Solver:
    """Base solver: holds the state, computes this update's numbers (learning rate from the
    policy, momentum, Adam's t) and hands them with the arrays to the backend's solver_update
    kernel, which regularizes and steps (mochapy.backends.interface); then enforces constraints.
    A method is a registered name, its state's names and the kernel's arithmetic."""

    state_names: ClassVar[tuple[str, ...]] = ()
    method: ClassVar[str] = ""  # the registered name, which the update kernels dispatch on

    def __init__(self, config: SolverConfig, net: Net) -> None:
        self.config = config
        self.net = net
        self.backend = net.backend
        self.iteration = 0
        self.lr_decays = 0  # decay_on_validation: the lr cuts so far (runtime state, snapshotted)
        store = net.params
        self.state = {name: self.backend.zeros(store.size) for name in self.state_names}
        self._segments: tuple[Any, Any] | None = None  # made at the first update

    def learning_rate(self, iteration: int | None = None) -> float:
        it = self.iteration if iteration is None else iteration
        return self.config.lr_policy.rate(self.config.base_lr, it, self.lr_decays)

    def validated(self, loss: float, previous_best: float | None) -> None:
        """Hear of a validation loss: the lr policy decides whether the lr is cut once more."""
        if self.config.lr_policy.cuts_after(loss, previous_best):
            self.lr_decays += 1

    def momentum(self) -> float:
        return self.config.mom_policy.momentum(self.config.momentum, self.iteration)

    def step_numbers(self) -> SolverStep:
        """The numbers of update number `iteration`, as the kernels take them."""
        cfg = self.config
        return SolverStep(lr=self.learning_rate(), momentum=self.momentum(), beta1=cfg.beta1,
                          beta2=cfg.beta2, epsilon=cfg.epsilon, t=self.iteration)

    def segments(self) -> tuple[Any, Any]:
        """The segment table (bounds, coefficients) of the net's parameters on the device:
        each parameter's lr multiplier and its regularizer's weight times regu_coef."""
        if self._segments is None:
            bounds, coefficients = segment_table(self.net.params.params.values(),
                                                 self.config.regu_coef)
            self._segments = (self.backend.from_host(bounds, dtype=np.int64),
                              self.backend.from_host(coefficients, dtype=np.float64))
        return self._segments

    def constrain(self) -> None:
        xp = self.backend.xp
        for param in self.net.params.params.values():
            cons = param.spec.constraint
            if cons.type != "L2" or self.iteration % cons.every_n_iter:
                continue
            # Each output unit's weight column; a bias is one vector, as in Mocha's L2Cons.
            w = param.data.reshape(-1, param.shape[-1] if param.data.ndim > 1 else 1)
            norms = xp.sqrt((w * w).sum(axis=0))
            w *= xp.minimum(1.0, cons.threshold / xp.maximum(norms, 1e-30))

    def update(self) -> None:
        """One solver step from the gradients of the last backward."""
        self.iteration += 1
        self.apply_update()

    def apply_update(self) -> None:
        """Regularize and step in one kernel call, then constrain."""
        store = self.net.params
        self.backend.kernels.solver_update(
            self.method, store.data, store.grad, [self.state[name] for name in self.state_names],
            *self.segments(), self.step_numbers(),
        )
        self.constrain()

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: self.backend.to_host(value).copy() for name, value in self.state.items()}
        state["iteration"] = np.array(self.iteration)
        state["lr_decays"] = np.array(self.lr_decays)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in self.state_names:
            self.backend.copy_from_host(self.state[name], np.asarray(state[name]))
        self.iteration = int(state["iteration"])
        self.lr_decays = int(state.get("lr_decays", 0))


SOLVERS: dict[str, type[Solver]] = {}


def register_solver(name: str):
    def decorate(cls: type[Solver]) -> type[Solver]:
        SOLVERS[name] = cls
        cls.method = name
        return cls

    return decorate


def make_solver(config: SolverConfig, net: Net) -> Solver:
    return SOLVERS[config.method](config, net)
