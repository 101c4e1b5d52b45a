"""Neurons (activation functions) applied inside layers.

Unlike Mocha.jl, backward sees the neuron's input as well as its output: Mocha computed gradients
from the output alone, which broke neurons whose derivative is not a function of the output.
Each neuron has a NumPy path and a GPU path (a kernel from kernels/neurons.cu, selected by `code`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mochapy.errors import ConfigError

# exp overflows float32 at inputs >= 88.73: no cap may pass 88, so exp stays finite in float32.
EXP_MAX_CAP = 88.0
# The default cap: an sd of e^30 (1.1e13) is far above any a pixel needs (the shipped decoders stay
# below e^17 on held-out images and prior samples), and sd^2 and 1/sd^2 stay normal float32
# numbers. At the old default, 88, one unusual training galaxy drove a decoder sd to 1.7e38.
EXP_INPUT_CAP = 30.0


@dataclass(frozen=True)
class Neuron(ABC):
    """Base neuron: y = f(x) elementwise, dx = f'(x) * dy."""

    code: ClassVar[int] = -1

    @property
    def parameter(self) -> float:
        """The neuron's one scalar parameter as the GPU kernels take it (0 when it has none)."""
        return 0.0

    @property
    def offset(self) -> float:
        """A constant the kernels add to the output (Exponential's shift; 0 for the others)."""
        return 0.0

    def forward(self, backend: Any, x: Any, y: Any) -> None:
        """Write f(x) into y (y may be x: every neuron can run in place)."""
        if backend.kind == "gpu":
            backend.kernels.neuron_forward(self.code, self.parameter, self.offset, x, y)
        else:
            self._forward_cpu(x, y)

    def backward(self, backend: Any, x: Any, y: Any, dy: Any, dx: Any) -> None:
        """Write f'(x) * dy into dx (dx may be dy); x is the input, y = f(x) the output."""
        if backend.kind == "gpu":
            backend.kernels.neuron_backward(self.code, self.parameter, x, y, dy, dx)
        else:
            self._backward_cpu(x, y, dy, dx)

    @abstractmethod
    def _forward_cpu(self, x: np.ndarray, y: np.ndarray) -> None: ...

    @abstractmethod
    def _backward_cpu(
        self, x: np.ndarray, y: np.ndarray, dy: np.ndarray, dx: np.ndarray
    ) -> None: ...


@dataclass(frozen=True)
class Identity(Neuron):
    code: ClassVar[int] = 0

    def _forward_cpu(self, x: np.ndarray, y: np.ndarray) -> None:
        if y is not x:
            y[...] = x

    def _backward_cpu(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
        if dx is not dy:
            dx[...] = dy


@dataclass(frozen=True)
class ReLU(Neuron):
    """y = max(x, epsilon), Mocha's ReLU(epsilon); epsilon > 0 keeps outputs off exact zero."""

    epsilon: float = 0.0
    code: ClassVar[int] = 1

    @property
    def parameter(self) -> float:
        return self.epsilon

    def _forward_cpu(self, x: np.ndarray, y: np.ndarray) -> None:
        np.maximum(x, self.epsilon, out=y)

    def _backward_cpu(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
        np.multiply(dy, x > self.epsilon, out=dx)


@dataclass(frozen=True)
class Exponential(Neuron):
    """y = exp(min(x, cap)) + shift, gradient 0 above the cap: the sd heads' positivity, bounded.

    The default cap, 30, bounds an sd at e^30 with its square finite in float32; a smaller cap
    bounds it further (e.g. 0 keeps an encoder sd at most the prior's, so one unusual input cannot
    throw z, and the loss, far off). The cap may be at most 88, where float32's exp overflows.
    `shift` is an sd floor (sigma = 0.001 + exp(.)) applied in the same pass: the net folds a
    Power layer that only shifts an Exponential's output into it (mochapy.graph.fold_shifts).
    The gradient is exp(x), recomputed: y - shift would lose the digits of a small exp(x).
    """

    cap: float = EXP_INPUT_CAP
    shift: float = 0.0
    code: ClassVar[int] = 2

    @property
    def parameter(self) -> float:
        return self.cap

    @property
    def offset(self) -> float:
        return self.shift

    def _forward_cpu(self, x: np.ndarray, y: np.ndarray) -> None:
        np.minimum(x, self.cap, out=y)
        np.exp(y, out=y)
        if self.shift:
            y += self.shift

    def _backward_cpu(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
        # d/dx exp(min(x, cap)) = exp(x) below the cap (y itself when there is no shift), 0 above.
        if not self.shift:
            np.multiply(dy, y, out=dx)
        elif dx is dy:
            dx *= np.exp(np.minimum(x, self.cap))
        else:
            np.minimum(x, self.cap, out=dx)
            np.exp(dx, out=dx)
            dx *= dy
        dx[x > self.cap] = 0


@dataclass(frozen=True)
class Sigmoid(Neuron):
    code: ClassVar[int] = 3

    def _forward_cpu(self, x: np.ndarray, y: np.ndarray) -> None:
        # 1 / (1 + exp(-x)) written as 0.5 * (1 + tanh(x / 2)) never overflows.
        np.multiply(x, 0.5, out=y)
        np.tanh(y, out=y)
        y += 1
        y *= 0.5

    def _backward_cpu(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
        np.multiply(dy, y * (1 - y), out=dx)


@dataclass(frozen=True)
class Tanh(Neuron):
    code: ClassVar[int] = 4

    def _forward_cpu(self, x: np.ndarray, y: np.ndarray) -> None:
        np.tanh(x, out=y)

    def _backward_cpu(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
        np.multiply(dy, 1 - y * y, out=dx)


NEURONS: dict[str, type[Neuron]] = {
    cls.__name__: cls for cls in (Identity, ReLU, Exponential, Sigmoid, Tanh)
}


def make_neuron(spec: Any, where: str) -> Neuron:
    """Build a neuron from YAML: a name (`ReLU`) or a mapping (`{type: ReLU, epsilon: 0.01}`)."""
    if spec is None:
        return Identity()
    if isinstance(spec, Neuron):
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where}: neuron must be a name or a mapping with 'type', got {spec!r}")
    fields = dict(spec)
    name = fields.pop("type")
    if not isinstance(name, str) or name not in NEURONS:
        raise ConfigError(f"{where}: unknown neuron {name!r}; known: {', '.join(NEURONS)}")
    cls = NEURONS[name]
    allowed = {ReLU: {"epsilon"}, Exponential: {"cap", "shift"}}.get(cls, set())
    unknown = set(fields) - allowed
    if unknown:
        raise ConfigError(f"{where}: neuron {name} has no field {sorted(unknown, key=str)[0]!r}")
    try:
        neuron = cls(**{k: float(v) for k, v in fields.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad neuron field: {exc}") from None
    if isinstance(neuron, Exponential) and not neuron.cap <= EXP_MAX_CAP:
        raise ConfigError(f"{where}: Exponential cap must be at most {EXP_MAX_CAP:g}")
    if isinstance(neuron, Exponential) and not np.isfinite(neuron.shift):
        raise ConfigError(f"{where}: Exponential shift must be a finite number")
    return neuron
