"""The backend each layer test runs on, in float64: the CPU backend's NumPy paths, its compiled
loops, and the GPU backend (on a device when CuPy sees one, else on the CUDA emulation; marked
`gpu`). A backend that is not there skips its variant."""

from __future__ import annotations

import pytest

from mochapy.backends import CPUBackend, cpu_kernels
from mochapy.backends.base import Backend


@pytest.fixture(params=["numpy", "compiled", pytest.param("gpu", marks=pytest.mark.gpu)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "numpy":
        return CPUBackend("float64", compiled=False)
    if request.param == "compiled":
        loaded = cpu_kernels.load()
        if isinstance(loaded, str):
            pytest.skip(f"the compiled CPU loops are not available: {loaded}")
        return CPUBackend("float64", compiled=True)
    request.getfixturevalue("gpu_runtime")
    from mochapy.backends.gpu import GPUBackend

    return GPUBackend("float64")
