"""CuPy backend: device arrays, our CUDA kernels, a choice of GEMM engines, whole-step CUDA graphs.

Imported only when the GPU backend is asked for, so CuPy (cupy-cuda12x or cupy-cuda13x) is never
needed otherwise. All work runs on one non-blocking stream per device, shared by every GPU backend
of the process and made current when a backend is created: a CUDA graph can be captured only on
such a stream, and one stream keeps CuPy's own operations (which use the current stream) ordered
with our kernels and cuBLAS calls (which name the stream).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mochapy.backends.base import Backend
from mochapy.backends.gpu_gemm import CAPTURE_ORDER, ENGINE_NAMES, ENGINES, first_line
from mochapy.backends.gpu_kernels import KernelLibrary
from mochapy.backends.gpu_step import StepRunner
from mochapy.backends.plan import gemm_shape
from mochapy.errors import BackendError

_STREAMS: dict[int, Any] = {}


def shared_stream(cupy: Any) -> Any:
    """The process's non-blocking work stream for the current device, created once."""
    device = cupy.cuda.Device().id
    if device not in _STREAMS:
        _STREAMS[device] = cupy.cuda.Stream(non_blocking=True)
    return _STREAMS[device]


class GPUBackend(Backend):
    """Runs every layer's `_gpu` path with CuPy arrays and the kernels in kernels/*.cu.

    gemm: "auto" (cuBLAS through our own handle, else our tiled kernels; when a training step is
    captured, each of cublas, tiled, cutensor is tried in turn), or one engine by name:
    "cublas", "tiled", "cutensor" or "cupy" (cupy.matmul, eager only).
    graph: capture whole training steps into a CUDA graph (`step_runner`); False runs them eagerly.
    """

    kind = "gpu"

    def __init__(self, dtype: str = "float32", gemm: str = "auto", graph: bool = True) -> None:
        super().__init__(dtype)
        if gemm not in ENGINE_NAMES:
            choices = ", ".join(ENGINE_NAMES)
            raise BackendError(f"unknown GEMM engine {gemm!r}: choose one of {choices}")
        import cupy

        self.xp = cupy
        self.gemm_choice = gemm
        self.graph = graph
        self.stream = shared_stream(cupy)
        self.stream.use()
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        self.kernels = KernelLibrary(cupy, self.dtype, self.stream)
        self._engines: dict[str, Any] = {}
        self._engine: Any = None

    def describe(self) -> str:
        return f"gpu ({self.device_name})"

    # -- arrays ----------------------------------------------------------------------------------
    def from_host(self, array: np.ndarray, dtype: Any = None) -> Any:
        host = np.ascontiguousarray(array, dtype=dtype or self.dtype)
        device = self.xp.empty(host.shape, dtype=host.dtype)
        device.set(host, stream=self.stream)
        return device

    def to_host(self, array: Any) -> np.ndarray:
        return array.get(stream=self.stream)

    def copy_from_host(self, dst: Any, src: np.ndarray) -> None:
        host = np.ascontiguousarray(np.broadcast_to(np.asarray(src, dtype=dst.dtype), dst.shape))
        dst.set(host, stream=self.stream)

    def all_finite(self, array: Any) -> bool:
        with self.stream:
            return bool(self.xp.isfinite(array).all())

    def synchronize(self) -> None:
        self.stream.synchronize()

    # -- matrix products ---------------------------------------------------------------------------
    @property
    def gemm_engine(self) -> Any:
        """The engine `gemm` uses now (resolved on first use)."""
        if self._engine is None:
            names = CAPTURE_ORDER[:2] if self.gemm_choice == "auto" else (self.gemm_choice,)
            reasons = []
            for name in names:
                try:
                    self.use_gemm(name)
                    break
                except Exception as error:
                    reasons.append(f"{name}: {first_line(error)}")
            else:
                raise BackendError("no GEMM engine is usable: " + "; ".join(reasons))
        return self._engine

    def use_gemm(self, name: str) -> None:
        """Switch to the named GEMM engine, creating it on first use (raises when unusable)."""
        if name not in self._engines:
            self._engines[name] = ENGINES[name](self)
        self._engine = self._engines[name]

    def capture_candidates(self) -> tuple[str, ...]:
        """The engines a graph capture tries, in order."""
        return CAPTURE_ORDER if self.gemm_choice == "auto" else (self.gemm_choice,)

    def gemm(
        self, a: Any, b: Any, out: Any, trans_a: bool = False, trans_b: bool = False
    ) -> None:
        """out = op(a) op(b) for C-contiguous 2-D arrays; op transposes where asked."""
        m, n, k = gemm_shape(a.shape, b.shape, out.shape, trans_a, trans_b)
        if not (a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("gemm needs C-contiguous arrays (pass trans_a/trans_b, not views)")
        self.gemm_engine(a, b, out, m, n, k, trans_a, trans_b)

    # -- whole training steps ----------------------------------------------------------------------
    def step_runner(self, net: Any, solver: Any) -> StepRunner:
        """A runner of whole training steps for `net` and `solver` (graph-captured if enabled)."""
        return StepRunner(self, net, solver, graph=self.graph)

    def __repr__(self) -> str:
        return (
            f"GPUBackend({self.dtype.name}, gemm={self.gemm_choice}, graph={self.graph}, "
            f"device={self.device_name!r})"
        )
