"""Matrix products on the GPU, from engines that differ in whether a CUDA graph can hold them.

CuPy refuses every cuBLAS call while a stream is capturing: each of its cuBLAS wrappers first
calls `cublas.setStream`, which raises NotImplementedError during capture. The engines here, in
the order `auto` tries them when a training step is captured:

- `cublas`: cuBLAS called directly through ctypes, on a handle of our own whose stream and
  workspace are set once before any capture, so nothing inside the capture touches them;
- `tiled`: our shared-memory GEMM kernels (kernels/gemm.cu), capturable like any kernel;
- `cutensor`: cupyx.cutensor's contraction, which CuPy allows during capture (when installed);
- `cupy`: plain cupy.matmul, for eager execution only.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import Any

from mochapy.backends.plan import cublas_gemm_args, find_mapped_library

CAPTURE_ORDER = ("cublas", "tiled", "cutensor")
ENGINE_NAMES = ("auto", *CAPTURE_ORDER, "cupy")
# cuBLAS's recommended user workspace on Hopper; set once so that no call allocates in a capture.
CUBLAS_WORKSPACE_BYTES = 32 * 1024 * 1024


class EngineUnavailable(RuntimeError):
    """A GEMM engine cannot run here (library missing, version too old); the message says why."""


def _load_cublas(cupy: Any) -> ctypes.CDLL:
    """The libcublas CuPy itself loaded (found in /proc/self/maps), else one by its usual names."""
    cupy.cuda.device.get_cublas_handle()  # makes CuPy load its libcublas into the process
    candidates = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"]
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            mapped = find_mapped_library(maps.read(), "libcublas.so")
    except OSError:
        mapped = None
    if mapped:
        candidates.insert(0, mapped)
    for name in candidates:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise EngineUnavailable(f"no libcublas could be loaded (tried {', '.join(candidates)})")


class CublasEngine:
    """cuBLAS sgemm/dgemm through ctypes on a private handle bound to the backend's stream."""

    name = "cublas"

    def __init__(self, backend: Any) -> None:
        lib = _load_cublas(backend.xp)
        if not hasattr(lib, "cublasSetWorkspace_v2"):
            raise EngineUnavailable("this libcublas is too old: it has no cublasSetWorkspace")
        self.handle = ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        weakref.finalize(self, lib.cublasDestroy_v2, self.handle)
        self._check(
            lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(backend.stream.ptr)),
            "cublasSetStream",
        )
        self.workspace = backend.xp.empty(CUBLAS_WORKSPACE_BYTES, dtype="uint8")
        self._check(
            lib.cublasSetWorkspace_v2(
                self.handle, ctypes.c_void_p(self.workspace.data.ptr),
                ctypes.c_size_t(CUBLAS_WORKSPACE_BYTES),
            ),
            "cublasSetWorkspace",
        )
        double = backend.dtype.name == "float64"
        scalar = ctypes.c_double if double else ctypes.c_float
        self._alpha, self._beta = scalar(1.0), scalar(0.0)
        self._gemm = lib.cublasDgemm_v2 if double else lib.cublasSgemm_v2
        self._gemm.restype = ctypes.c_int
        self._gemm.argtypes = [
            ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
        ]

    @staticmethod
    def _check(status: int, call: str) -> None:
        if status != 0:
            raise EngineUnavailable(f"{call} failed with cuBLAS status {status}")

    def __call__(
        self, a: Any, b: Any, out: Any, m: int, n: int, k: int, trans_a: bool, trans_b: bool
    ) -> None:
        op_b, op_a, rows, cols, inner, ld_b, ld_a, ld_out = cublas_gemm_args(
            m, n, k, trans_a, trans_b
        )
        status = self._gemm(
            self.handle, op_b, op_a, rows, cols, inner, ctypes.addressof(self._alpha),
            b.data.ptr, ld_b, a.data.ptr, ld_a, ctypes.addressof(self._beta), out.data.ptr, ld_out,
        )
        if status != 0:
            raise RuntimeError(f"cuBLAS gemm failed with status {status} ({m}x{n}x{k})")


class TiledEngine:
    """Our kernels/gemm.cu: slower than cuBLAS, but nothing in it can refuse a capture."""

    name = "tiled"

    def __init__(self, backend: Any) -> None:
        self.kernels = backend.kernels
        self.kernels.compile("gemm.cu")  # now, never inside a capture

    def __call__(
        self, a: Any, b: Any, out: Any, m: int, n: int, k: int, trans_a: bool, trans_b: bool
    ) -> None:
        self.kernels.gemm_tiled(a, b, out, m, n, k, trans_a, trans_b)


class CutensorEngine:
    """cupyx.cutensor.contraction; needs the cuTENSOR library, which CuPy loads on demand."""

    name = "cutensor"

    def __init__(self, backend: Any) -> None:
        try:
            from cupyx import cutensor

            probe = backend.xp.ones((2, 2), dtype=backend.dtype)
            cutensor.contraction(1.0, probe, ("m", "k"), probe, ("k", "n"), 0.0, probe * 0,
                                 ("m", "n"))
        except Exception as error:
            raise EngineUnavailable(f"cuTENSOR is not usable: {first_line(error)}") from error
        self.cutensor = cutensor

    def __call__(
        self, a: Any, b: Any, out: Any, m: int, n: int, k: int, trans_a: bool, trans_b: bool
    ) -> None:
        self.cutensor.contraction(
            1.0, a, ("k", "m") if trans_a else ("m", "k"), b, ("n", "k") if trans_b else ("k", "n"),
            0.0, out, ("m", "n"),
        )


class CupyEngine:
    """cupy.matmul: CuPy's own cuBLAS path, which works eagerly and refuses stream capture."""

    name = "cupy"

    def __init__(self, backend: Any) -> None:
        self.xp = backend.xp

    def __call__(
        self, a: Any, b: Any, out: Any, m: int, n: int, k: int, trans_a: bool, trans_b: bool
    ) -> None:
        self.xp.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)


ENGINES: dict[str, type] = {
    engine.name: engine for engine in (CublasEngine, TiledEngine, CutensorEngine, CupyEngine)
}


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`, for one-line reasons in warnings and reports."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
