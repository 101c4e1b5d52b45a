"""The backend seam: what layers, nets and solvers may ask of a compute device."""

from __future__ import annotations

from typing import Any

import numpy as np


class Backend:
    """Array module, dtype and the few device operations the engine needs.

    `kind` ("cpu" or "gpu") selects each layer's `_forward_<kind>` / `_backward_<kind>` path.
    """

    kind = "abstract"
    xp: Any = np
    kernels: Any = None  # the backend's interface.Kernels library, set by each backend

    def __init__(self, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
        self.dtype = np.dtype(dtype)

    def zeros(self, shape: tuple[int, ...] | int, dtype: Any = None) -> Any:
        return self.xp.zeros(shape, dtype=dtype or self.dtype)

    def empty(self, shape: tuple[int, ...] | int, dtype: Any = None) -> Any:
        return self.xp.empty(shape, dtype=dtype or self.dtype)

    def from_host(self, array: np.ndarray, dtype: Any = None) -> Any:
        return self.xp.asarray(np.asarray(array, dtype=dtype or self.dtype))

    def to_host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def copy_from_host(self, dst: Any, src: np.ndarray) -> None:
        """Copy a host array into an existing device array without reallocating."""
        dst[...] = src

    def all_finite(self, array: Any) -> bool:
        return bool(self.xp.isfinite(array).all())

    def describe(self) -> str:
        """The backend in a few words, for logs and training.json."""
        return self.kind

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dtype.name})"
