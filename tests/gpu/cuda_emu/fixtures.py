"""Pytest fixtures that give the GPU tests a device: the real one when CuPy sees one, else the CUDA
emulation (skipped only where g++ is missing). Import them into a test module:

    from tests.gpu.cuda_emu.fixtures import cuda_emulator, gpu_runtime  # noqa: F401

CUDA_EMU=off turns the fallback off (benchmarks/gpu_check.sh: tests meant for the device skip
rather than pass on the emulation). The emulation's compiled kernels are cached per session in a
temporary folder, or in $CUDA_EMU_CACHE when set (reused across sessions: the names are content
hashes).
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mochapy.backends import gpu_available
from mochapy.backends.plan import KERNELS, expand_includes, kernel_dir, name_expressions

from .fake_cupy import Emulator

REAL_GPU = gpu_available()
EMULATION_MISSING = (
    "" if shutil.which("g++") and shutil.which("cc") and platform.system() == "Linux"
    else "the CUDA emulation needs g++, cc and Linux"
)


def emulated() -> bool:
    """Whether GPU tests in this session run on the emulation (no real device)."""
    return not REAL_GPU


def build_every_kernel(emulator: Emulator, workers: int = 2) -> None:
    """Compile every kernel file for both dtypes up front, two at a time."""

    def build(file_name: str) -> None:
        names = name_expressions(file_name, "float32") + name_expressions(file_name, "float64")
        emulator.builder.library(expand_includes(kernel_dir() / file_name), names)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(build, sorted(KERNELS)))


@pytest.fixture(scope="session")
def cuda_emulator(tmp_path_factory: pytest.TempPathFactory) -> Emulator:
    """The session's emulated device, every kernel built."""
    if EMULATION_MISSING:
        pytest.skip(EMULATION_MISSING)
    cache = os.environ.get("CUDA_EMU_CACHE")
    emulator = Emulator(Path(cache) if cache else tmp_path_factory.mktemp("cuda_emu"))
    build_every_kernel(emulator)
    return emulator


@pytest.fixture(scope="module")
def gpu_runtime(request: pytest.FixtureRequest) -> Iterator[Emulator | None]:
    """A usable `import cupy` for the module: the real CuPy (yields None) or the emulation."""
    if REAL_GPU:
        yield None
        return
    if os.environ.get("CUDA_EMU") == "off":
        pytest.skip("needs CuPy and a CUDA device (CUDA_EMU=off: no emulation)")
    emulator = request.getfixturevalue("cuda_emulator")
    with emulator.installed():
        yield emulator


def steps(on_device: int, emulated_steps: int) -> int:
    """A step count: the full one on a device, a short one under the emulation."""
    return emulated_steps if emulated() else on_device
