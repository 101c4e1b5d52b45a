"""Shared fixtures: float64 backends, a layer harness, a finite-difference checker, a small VAE.

The gradient checks compare each analytic gradient with central differences in float64, so a
wrong derivative shows up as a relative error near 1 while a right one stays below ~1e-6.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from cuda_emu.fixtures import cuda_emulator, gpu_runtime  # noqa: F401 (fixtures for GPU tests)

from mochapy.backends import CPUBackend, cpu_kernels
from mochapy.blob import Blob
from mochapy.layers import LAYER_TYPES, Layer, LayerConfig, NetContext
from mochapy.net import Net
from mochapy.params import ParamStore

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
FD_STEP = 1e-6


def make_config(type_name: str, **fields: Any) -> LayerConfig:
    """A validated layer config, built the way YAML builds it."""
    return LAYER_TYPES[type_name].from_mapping({"type": type_name, **fields}, "test")


def central_difference(
    objective: Callable[[], float], array: np.ndarray, indices: Iterable[tuple[int, ...]],
    step: float = FD_STEP,
) -> np.ndarray:
    """d objective / d array[i] for each index, perturbing `array` in place and restoring it."""
    values = []
    for index in indices:
        original = array[index]
        array[index] = original + step
        plus = objective()
        array[index] = original - step
        minus = objective()
        array[index] = original
        values.append((plus - minus) / (2 * step))
    return np.array(values)


def assert_gradient_close(
    analytic: np.ndarray, numeric: np.ndarray, what: str, rtol: float = 1e-6, atol: float = 1e-9
) -> None:
    """Relative agreement, scaled by the larger of the two gradients (never by a tiny entry)."""
    scale = max(float(np.abs(analytic).max(initial=0)), float(np.abs(numeric).max(initial=0)), 1)
    error = float(np.abs(analytic - numeric).max(initial=0))
    assert error <= rtol * scale + atol, (
        f"{what}: analytic {analytic} vs finite differences {numeric} (max error {error:.3g})"
    )


def all_indices(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(np.ndindex(*shape))


def sample_indices(
    shape: tuple[int, ...], count: int, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """Up to `count` distinct random entries of an array of `shape`."""
    size = int(np.prod(shape))
    flat = rng.choice(size, size=min(count, size), replace=False)
    return [tuple(int(i) for i in np.unravel_index(f, shape)) for f in flat]


class LayerHarness:
    """One layer set up outside a net, its bottoms taking gradients, its tops given upstream
    gradients G so that the objective of a non-loss layer is sum(G * top)."""

    def __init__(
        self,
        config: LayerConfig,
        bottoms: dict[str, np.ndarray],
        *,
        backend: Any = None,
        grad_bottoms: Iterable[str] | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        memory_data: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.backend = backend or CPUBackend("float64")
        wanted = set(bottoms if grad_bottoms is None else grad_bottoms)
        blobs = [
            Blob(name, self.backend.from_host(np.array(array)),  # a copy: tests reuse inputs
                 self.backend.zeros(np.shape(array)) if name in wanted else None)
            for name, array in bottoms.items()
        ]
        if batch_size is None:
            batch_size = len(next(iter(bottoms.values()))) if bottoms else 1
        self.store = ParamStore(self.backend, seed)
        ctx = NetContext(self.backend, self.store, seed, batch_size, "train", memory_data)
        self.layer: Layer = config.layer_class(config, ctx, blobs)
        self.store.allocate()
        rng = np.random.default_rng(seed + 1)
        self.upstream = {}
        for top in self.layer.tops:
            top.diff = self.backend.from_host(rng.normal(size=top.shape))
            self.upstream[top.name] = top.diff

    @property
    def bottoms(self) -> dict[str, Blob]:
        return {b.name: b for b in self.layer.bottoms}

    def objective(self) -> float:
        self.layer.forward()
        if self.layer.config.has_loss:
            return self.layer.loss
        return float(sum(np.sum(self.upstream[t.name] * t.data) for t in self.layer.tops))

    def gradients(self) -> dict[str, np.ndarray]:
        """Analytic gradients of the objective by bottom name and parameter key."""
        self.layer.forward()
        self.layer.backward()
        grads = {b.name: b.diff.copy() for b in self.layer.bottoms if b.diff is not None}
        grads.update({p.key: p.grad.copy() for p in self.layer.params})
        return grads

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the gradients are taken with respect to, by the same names."""
        arrays = {b.name: b.data for b in self.layer.bottoms if b.diff is not None}
        arrays.update({p.key: p.data for p in self.layer.params})
        return arrays

    def check_gradients(self, rtol: float = 1e-6, atol: float = 1e-9) -> None:
        analytic = self.gradients()
        for name, array in self.arrays().items():
            indices = all_indices(array.shape)
            numeric = central_difference(self.objective, array, indices)
            got = np.array([analytic[name][i] for i in indices])
            assert_gradient_close(got, numeric, f"{self.layer.config.name}: d/d{name}", rtol, atol)


def vae_layer_entries(pixels: int = 25, hidden: int = 16, batch_size: int = 10) -> list[dict]:
    """The layers of examples/galaxy_vae_poster.yaml, shrunk, with MemoryData feeding `data`."""
    raw = yaml.safe_load((EXAMPLES / "galaxy_vae_poster.yaml").read_text())
    sizes = {128: hidden, 4761: pixels}
    entries = []
    for entry in copy.deepcopy(raw["layers"]):
        if entry["type"] == "HDF5Data":
            entry = {"type": "MemoryData", "name": entry["name"], "tops": entry["tops"],
                     "batch_size": batch_size}
        if "output_dim" in entry:
            entry["output_dim"] = sizes.get(entry["output_dim"], entry["output_dim"])
        entries.append(entry)
    return entries


def build_net(
    entries: list[dict], memory_data: dict[str, dict[str, np.ndarray]], *,
    dtype: str = "float64", seed: int = 0, **kwargs: Any,
) -> Net:
    configs = [make_config(e["type"], **{k: v for k, v in e.items() if k != "type"})
               for e in entries]
    return Net("test", CPUBackend(dtype), configs, seed=seed, memory_data=memory_data, **kwargs)


@pytest.fixture
def engine() -> types.SimpleNamespace:
    """The helpers above, for test modules (conftest is not importable by name everywhere)."""
    return types.SimpleNamespace(
        make_config=make_config, central_difference=central_difference,
        assert_gradient_close=assert_gradient_close, all_indices=all_indices,
        sample_indices=sample_indices, LayerHarness=LayerHarness,
        vae_layer_entries=vae_layer_entries, build_net=build_net, examples=EXAMPLES,
    )


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
