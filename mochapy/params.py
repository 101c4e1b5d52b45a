"""Learnable parameters: initializers, regularizers, constraints, lr multipliers, sharing by key.

All parameters of a net live in one flat buffer (and their gradients in another), so a solver
update is a handful of whole-buffer operations on the CPU and one kernel launch on the GPU.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mochapy.errors import ConfigError
from mochapy.limits import check_array


@dataclass(frozen=True)
class Initializer:
    """How a parameter starts: Xavier, Gaussian, Constant or Orthogonal (Mocha's names)."""

    type: str = "Xavier"
    value: float = 0.0
    mean: float = 0.0
    std: float = 0.01
    gain: float = 1.0

    TYPES = ("Xavier", "Gaussian", "Constant", "Orthogonal")

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw initial values; fan-in is every axis but the last (weights are (in, out))."""
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else int(shape[0])
        if self.type == "Constant":
            return np.full(shape, self.value)
        if self.type == "Gaussian":
            return rng.normal(self.mean, self.std, size=shape)
        if self.type == "Xavier":
            # Mocha/Caffe's Xavier: uniform on +-sqrt(3 / fan_in), variance 1 / fan_in.
            bound = np.sqrt(3.0 / fan_in)
            return rng.uniform(-bound, bound, size=shape)
        rows, cols = fan_in, shape[-1]
        a = rng.normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        q = q if rows >= cols else q.T
        return self.gain * q.reshape(shape)


@dataclass(frozen=True)
class Regularizer:
    """A penalty added to the gradient by the solver: coefficient * regu_coef * (w or sign(w))."""

    type: str = "L2"
    coefficient: float = 1.0

    TYPES = ("L2", "L1", "none")

    def penalty(self, w: np.ndarray) -> float:
        if self.type == "L2":
            return 0.5 * self.coefficient * float(np.dot(w.ravel(), w.ravel()))
        if self.type == "L1":
            return self.coefficient * float(np.abs(w).sum())
        return 0.0


@dataclass(frozen=True)
class Constraint:
    """Projects each output unit's weight vector onto the L2 ball of radius `threshold`."""

    type: str = "none"
    threshold: float = 1.0
    every_n_iter: int = 1

    TYPES = ("L2", "none")


@dataclass(frozen=True)
class ParamSpec:
    """Everything a layer's config says about one of its parameters."""

    init: Initializer = field(default_factory=Initializer)
    regularizer: Regularizer = field(default_factory=Regularizer)
    constraint: Constraint = field(default_factory=Constraint)
    lr_mult: float = 1.0


def parse_component(cls: type, spec: Any, where: str) -> Any:
    """Build an Initializer/Regularizer/Constraint from YAML (`L2`, `none`, or a mapping)."""
    if spec is None:
        spec = {"type": "none"} if cls is not Initializer else {}
    if isinstance(spec, cls):
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a name or a mapping, got {spec!r}")
    names = {f for f in cls.__dataclass_fields__}
    unknown = set(spec) - names
    if unknown:
        first = sorted(unknown, key=str)[0]
        raise ConfigError(f"{where}: unknown field {first!r}; known: {sorted(names)}")
    kind = spec.get("type", cls().type)
    if kind not in cls.TYPES:
        raise ConfigError(f"{where}: unknown type {kind!r}; known: {', '.join(cls.TYPES)}")
    values: dict[str, Any] = {"type": kind}
    for key, value in spec.items():
        if key == "type":
            continue
        expected = type(getattr(cls(), key))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value
        ):
            raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
        values[key] = expected(value)
        if expected is int and value != int(value):
            raise ConfigError(f"{where}.{key}: expected an integer, got {value!r}")
    return cls(**values)


class Param:
    """One named parameter: views into the store's flat data and gradient buffers."""

    def __init__(self, key: str, shape: tuple[int, ...], spec: ParamSpec) -> None:
        self.key = key
        self.shape = shape
        self.spec = spec
        self.size = int(np.prod(shape))
        self.offset = -1
        self.data: Any = None
        self.grad: Any = None

    def __repr__(self) -> str:
        return f"Param({self.key!r}, {self.shape})"


class ParamStore:
    """The flat buffers of a net's parameters, shared by key with other nets (train and test)."""

    def __init__(self, backend: Any, seed: int = 0) -> None:
        self.backend = backend
        self.seed = seed
        self.params: dict[str, Param] = {}
        self.data: Any = None
        self.grad: Any = None

    def declare(self, key: str, shape: tuple[int, ...], spec: ParamSpec, where: str) -> Param:
        """Ask for a parameter; a key seen before (from this or a shared net) is reused."""
        if key in self.params:
            param = self.params[key]
            if param.shape != shape:
                raise ConfigError(
                    f"{where}: shared parameter {key!r} has shape {param.shape}, "
                    f"but this layer needs {shape}"
                )
            return param
        if self.data is not None:
            raise ConfigError(f"{where}: parameter {key!r} is not in the shared store")
        check_array(shape, self.backend.dtype.itemsize, f"{where}: parameter {key!r}")
        param = Param(key, shape, spec)
        self.params[key] = param
        return param

    @property
    def size(self) -> int:
        return sum(p.size for p in self.params.values())

    def allocate(self) -> None:
        """Lay out every declared parameter in one buffer and draw its initial values."""
        if self.data is not None:
            return
        # values, gradients and the host copy they start from
        check_array((self.size,), self.backend.dtype.itemsize, "the net's parameters", 3)
        host = np.empty(self.size, dtype=self.backend.dtype)
        offset = 0
        for param in self.params.values():
            seed = [self.seed, zlib.crc32(param.key.encode())]
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
            host[offset : offset + param.size] = param.spec.init.sample(param.shape, rng).ravel()
            param.offset = offset
            offset += param.size
        self.data = self.backend.from_host(host)
        self.grad = self.backend.zeros(self.size)
        for param in self.params.values():
            span = slice(param.offset, param.offset + param.size)
            param.data = self.data[span].reshape(param.shape)
            param.grad = self.grad[span].reshape(param.shape)

    def host_arrays(self) -> dict[str, np.ndarray]:
        """A copy of every parameter on the host, by key (for snapshots and exports)."""
        return {k: self.backend.to_host(p.data).copy() for k, p in self.params.items()}

    def load_host_arrays(
        self, arrays: dict[str, np.ndarray], where: str, partial: bool = False
    ) -> list[str]:
        """Overwrite parameters from host arrays, checking that names and shapes match.

        With `partial`, parameters that `arrays` lacks keep their values; returns their names.
        """
        missing = sorted(set(self.params) - set(arrays))
        if missing and not partial:
            raise ConfigError(f"{where}: no values for parameter {missing[0]!r}")
        for key, param in self.params.items():
            if key not in arrays:
                continue
            value = np.asarray(arrays[key])
            if value.shape != param.shape:
                raise ConfigError(
                    f"{where}: parameter {key!r} has shape {value.shape}, "
                    f"the net needs {param.shape}"
                )
            self.backend.copy_from_host(param.data, value.astype(self.backend.dtype))
        return missing

    def regularization_loss(self, regu_coef: float) -> float:
        return regu_coef * sum(
            p.spec.regularizer.penalty(self.backend.to_host(p.data)) for p in self.params.values()
        )
