"""Compute backends, chosen per run (never by environment at import)."""

from __future__ import annotations

from mochapy.backends.base import Backend
from mochapy.backends.cpu import CPUBackend
from mochapy.errors import BackendError

BACKEND_NAMES = ("cpu", "gpu", "auto")


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
    except Exception:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_backend(name: str = "cpu", dtype: str = "float32") -> Backend:
    """Return a backend by name; `auto` picks the GPU when one is usable, else the CPU."""
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}")
    if name == "auto":
        name = "gpu" if gpu_available() else "cpu"
    if name == "cpu":
        return CPUBackend(dtype)
    if not gpu_available():
        raise BackendError("backend 'gpu' needs CuPy and a CUDA device; none is usable here")
    from mochapy.backends.gpu import GPUBackend

    return GPUBackend(dtype)


__all__ = ["Backend", "CPUBackend", "get_backend", "gpu_available"]
