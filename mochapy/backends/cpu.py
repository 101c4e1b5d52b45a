"""NumPy backend: in-place, preallocated arithmetic on the host."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from mochapy.backends import cpu_kernels
from mochapy.backends.base import Backend
from mochapy.backends.cpu_kernels import CPUKernels
from mochapy.backends.numpy_kernels import NumPyKernels
from mochapy.errors import BackendError


class CPUBackend(Backend):
    """Runs every layer's `_cpu` path with NumPy (multi-threaded BLAS for the GEMMs).

    kernels: the compiled loops of kernels/cpu/ (the solver update, InnerProduct's bias and neuron,
    the Gaussian loss) or, where they do not build, the same ops in NumPy; `compiled` says which
    (None: compiled where they build; True: they must build; False: NumPy only). threads: how
    many threads the compiled loops and BLAS use (default: MOCHAPY_NUM_THREADS, else the BLAS's
    own setting, else the usable cores). Given, it is set on BLAS for the whole process, which
    has one BLAS.
    """

    kind = "cpu"
    xp = np

    def __init__(self, dtype: str = "float32", compiled: bool | None = None,
                 threads: int | None = None) -> None:
        super().__init__(dtype)
        self.kernels: CPUKernels | NumPyKernels = NumPyKernels()
        self.loops = "NumPy loops"
        chosen = threads or cpu_kernels.chosen_threads()
        if chosen:
            threadpool_limits(chosen, user_api="blas")
        self.threads = chosen or cpu_kernels.default_threads()
        if compiled is not False:
            loaded = cpu_kernels.load()
            if isinstance(loaded, str):
                if compiled:
                    raise BackendError(f"the compiled CPU loops are not available: {loaded}")
                self.loops = f"NumPy loops ({loaded})"
            else:
                if loaded.threads != self.threads:
                    loaded = CPUKernels(loaded.path, self.threads)
                self.kernels = loaded
                plural = "s" if loaded.threads > 1 else ""
                self.loops = f"compiled loops, {loaded.threads} thread{plural}"

    def __repr__(self) -> str:
        return f"CPUBackend({self.dtype.name}, {self.loops})"

    def describe(self) -> str:
        return f"cpu ({self.loops})"

    def to_host(self, array: np.ndarray) -> np.ndarray:
        return array

    def gemm(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool = False,
             trans_b: bool = False) -> None:
        """out = op(a) op(b), the GPU backend's call: NumPy hands a transposed operand to BLAS as
        a transpose flag and writes into `out` directly, so no temporary is made."""
        np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
