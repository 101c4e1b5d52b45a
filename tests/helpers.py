"""Helpers the tests import (`from tests.helpers import LayerHarness, make_config, ...`): layer
configs built as YAML builds them, a harness that runs one layer outside a net, float64
finite-difference gradient checks, and the small VAE of examples/galaxy_vae_poster.yaml.

The gradient checks compare each analytic gradient with central differences in float64, so a
wrong derivative shows up as a relative error near 1 while a right one stays below ~1e-6.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mochapy.backends import CPUBackend
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
    """One layer set up outside a net on any backend (float64 CPU by default), its bottoms taking
    gradients, its tops given upstream gradients G so that the objective of a non-loss layer is
    sum(G * top). Results come back to the host through host() and top()."""

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

    def host(self, array: Any) -> np.ndarray:
        """A backend array (a blob's data or diff, a parameter) as a NumPy copy."""
        return np.array(self.backend.to_host(array))

    def top(self, index: int = 0) -> np.ndarray:
        """The data of the layer's top `index`, on the host."""
        return self.host(self.layer.tops[index].data)

    def objective(self) -> float:
        self.layer.forward()
        if self.layer.config.has_loss:
            return float(self.layer.loss)
        return float(sum(float((self.upstream[t.name] * t.data).sum()) for t in self.layer.tops))

    def gradients(self) -> dict[str, np.ndarray]:
        """Analytic gradients of the objective by bottom name and parameter key, on the host."""
        self.layer.forward()
        self.layer.backward()
        grads = {b.name: self.host(b.diff) for b in self.layer.bottoms if b.diff is not None}
        grads.update({p.key: self.host(p.grad) for p in self.layer.params})
        return grads

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the gradients are taken with respect to, by the same names (on the backend:
        central_difference perturbs them in place)."""
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


def source_layer(type_name: str, batch_size: int, memory_data: dict | None = None,
                 backend: Any = None, **fields: Any) -> Layer:
    """A data layer (no bottoms) named 'data', set up outside a net."""
    config = make_config(type_name, name="data", batch_size=batch_size, **fields)
    return LayerHarness(config, {}, backend=backend, batch_size=batch_size,
                        memory_data=memory_data).layer


def batches(layer: Layer, count: int) -> list[list[np.ndarray]]:
    """`count` forward passes of a data layer: each pass's tops, on the host."""
    out = []
    for _ in range(count):
        layer.forward()
        out.append([np.array(layer.backend.to_host(top.data)) for top in layer.tops])
    return out


def feed(config: LayerConfig, values: list[np.ndarray], backend: Any = None) -> Layer:
    """Set up a sink on blob 'v' and forward each batch of values through it."""
    harness = LayerHarness(config, {"v": values[0]}, backend=backend, grad_bottoms=())
    for value in values:
        harness.backend.copy_from_host(harness.bottoms["v"].data, value)
        harness.layer.forward()
    return harness.layer


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
