"""NumPy backend: in-place, preallocated arithmetic on the host."""

from __future__ import annotations

import numpy as np

from mochapy.backends.base import Backend


class CPUBackend(Backend):
    """Runs every layer's `_cpu` path with NumPy (multi-threaded BLAS for the GEMMs)."""

    kind = "cpu"
    xp = np

    def to_host(self, array: np.ndarray) -> np.ndarray:
        return array
