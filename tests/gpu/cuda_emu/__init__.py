"""A CPU emulation of CUDA for the test suite: kernels/*.cu compiled as C++ against cuda_emu.h
(build.py) and launched through a CuPy stand-in (fake_cupy.py) under the real GPU backend.
docs/gpu.md describes what it checks and what it cannot see."""

from .build import CompileError, EmulationError
from .fake_cupy import CaptureError, Emulator, GuardError

__all__ = ["CaptureError", "CompileError", "EmulationError", "Emulator", "GuardError"]
