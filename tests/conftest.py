"""Shared fixtures: backends, random generators, the small VAE, a copy of examples/tiny.yaml, a
Dask cluster and the GPU runtime. Helpers that tests call directly live in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mochapy.backends import CPUBackend, cpu_kernels
from mochapy.net import Net
from tests.gpu.cuda_emu.fixtures import cuda_emulator, gpu_runtime  # noqa: F401 (GPU fixtures)
from tests.helpers import EXAMPLES, build_net, vae_layer_entries


@pytest.fixture(params=["compiled", "numpy"])
def cpu_loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the CPU backend's compiled loops, then again on its NumPy paths."""
    if request.param == "numpy":
        monkeypatch.setattr(cpu_kernels, "load", lambda: "NumPy paths for this test")
    elif isinstance(cpu_kernels.load(), str):
        pytest.skip(f"the compiled CPU loops are not available: {cpu_kernels.load()}")
    return request.param


@pytest.fixture(scope="module")
def threaded_dask():
    """A 2-worker, in-process Dask cluster shared by a test module (dask loads only when asked)."""
    from galaxy_model.cluster import dask_client

    with dask_client(workers=2, processes=False) as client:
        yield client


@pytest.fixture
def cpu64() -> CPUBackend:
    return CPUBackend("float64")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def small_vae() -> Callable[..., Net]:
    """Build the small float64 VAE on given images (N, 1, 5, 5) or random ones."""

    def build(images: np.ndarray | None = None, seed: int = 3, batch_size: int = 10) -> Net:
        if images is None:
            images = np.random.default_rng(seed).normal(size=(batch_size, 1, 5, 5))
        entries = vae_layer_entries(pixels=int(np.prod(images.shape[1:])), batch_size=batch_size)
        return build_net(entries, {"data": {"data": images}}, seed=seed)

    return build


@pytest.fixture
def tiny_example(tmp_path: Path) -> Path:
    """A copy of examples/tiny.yaml and its data in tmp_path (runs never write into the repo)."""
    folder = tmp_path / "example"
    (folder / "data").mkdir(parents=True)
    for name in ("tiny_train.txt", "tiny_train.h5", "tiny_test.h5"):
        (folder / "data" / name).write_bytes((EXAMPLES / "data" / name).read_bytes())
    (folder / "tiny.yaml").write_text((EXAMPLES / "tiny.yaml").read_text())
    return folder / "tiny.yaml"
