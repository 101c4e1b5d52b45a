"""Net: layer configs sorted into a graph by blob names, run forward and backward.

Where one blob feeds several layers, each consumer writes its own gradient buffer and the net sums
them before the producer's backward (so Mocha's hand-written SplitLayer is never needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mochapy.blob import Blob
from mochapy.errors import ConfigError, TopologyError
from mochapy.graph import fold_shifts, prune, topological_order
from mochapy.layers import Layer, LayerConfig, NetContext
from mochapy.params import ParamStore


class Net:
    """A built net: layers set up in order, blobs by name, parameters in a flat store.

    `inputs` maps blob names to per-row shapes for blobs set from Python (`set_input`); the layers
    that would produce them are dropped. `outputs` prunes the net to what those blobs need. A
    Power layer that only shifts an Exponential's output is folded into that neuron
    (graph.fold_shifts): the blob between them is not made.
    """

    def __init__(
        self,
        name: str,
        backend: Any,
        configs: Sequence[LayerConfig],
        *,
        seed: int = 0,
        phase: str = "train",
        params: ParamStore | None = None,
        batch_size: int | None = None,
        inputs: dict[str, tuple[int, ...]] | None = None,
        outputs: Sequence[str] | None = None,
        memory_data: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.phase = phase
        inputs = dict(inputs or {})
        if inputs or outputs:
            configs = [c for c in configs if not set(c.tops) & set(inputs)]
        if outputs:
            configs = prune(configs, set(inputs), set(outputs))
        self.configs = topological_order(fold_shifts(configs, outputs or ()), inputs)
        self.params = params if params is not None else ParamStore(backend, seed)
        self.batch_size = batch_size or self._batch_size_from_sources()
        ctx = NetContext(backend, self.params, seed, self.batch_size, phase, memory_data)

        self.blobs: dict[str, Blob] = {}
        for blob_name, row_shape in inputs.items():
            self.blobs[blob_name] = Blob(blob_name, backend.zeros((self.batch_size, *row_shape)))
        self.layers: list[Layer] = []
        consumers = self._consumer_counts()
        self.requires_grad: dict[str, bool] = {name: False for name in self.blobs}
        self._views: dict[str, list[Blob]] = {}
        for cfg in self.configs:
            bottoms = [self._bottom_for(cfg, b, consumers[b]) for b in cfg.bottoms]
            layer = cfg.layer_class(cfg, ctx, bottoms)
            learns = cfg.can_do_bp and (
                cfg.has_param or any(self.requires_grad[b] for b in cfg.bottoms)
            )
            for top in layer.tops:
                self.blobs[top.name] = top
                self.requires_grad[top.name] = learns and phase == "train"
                if self.requires_grad[top.name]:
                    top.diff = backend.zeros(top.shape)
            self.layers.append(layer)
        self._check_no_param_shared_within()
        self.params.allocate()
        self._attach_views()
        self.backward_layers = [
            layer
            for layer in reversed(self.layers)
            if phase == "train"
            and layer.config.can_do_bp
            and (layer.params or any(b.diff is not None for b in layer.bottoms))
        ]
        self.loss_layers = [layer for layer in self.layers if layer.config.has_loss]
        self.sinks = [layer for layer in self.layers if layer.config.is_sink]

    # -- construction helpers ---------------------------------------------------------------------
    def _batch_size_from_sources(self) -> int:
        for cfg in self.configs:
            size = getattr(cfg, "batch_size", 0)
            if cfg.is_source and size:
                return size
        raise TopologyError(f"net {self.name!r}: no data layer sets batch_size; pass batch_size")

    def _consumer_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for cfg in self.configs:
            for bottom in cfg.bottoms:
                counts[bottom] = counts.get(bottom, 0) + 1
        return counts

    def _bottom_for(self, cfg: LayerConfig, name: str, n_consumers: int) -> Blob:
        blob = self.blobs[name]
        if n_consumers == 1 or not self.requires_grad[name]:
            return blob
        view = Blob(name, blob.data)  # its own diff, summed into blob.diff before backward
        self._views.setdefault(name, []).append(view)
        return view

    def _check_no_param_shared_within(self) -> None:
        """Each layer overwrites its parameters' gradients, so two layers of one net on one key
        would silently keep only one gradient: sharing by key is for distinct nets only."""
        owners: dict[str, str] = {}
        for layer in self.layers:
            for param in layer.params:
                if param.key in owners:
                    raise ConfigError(
                        f"net {self.name!r}: layers {owners[param.key]!r} and "
                        f"{layer.config.name!r} both use parameter {param.key!r}; parameters "
                        "are shared by param_key between nets (train and test), not within one"
                    )
                owners[param.key] = layer.config.name

    def _attach_views(self) -> None:
        for name, views in self._views.items():
            for view in views:
                view.data = self.blobs[name].data
                view.diff = self.backend.zeros(view.data.shape)

    # -- running ----------------------------------------------------------------------------------
    def set_input(self, name: str, values: Any) -> None:
        """Copy host values into an input blob declared with `inputs=`."""
        self.backend.copy_from_host(self.blobs[name].data, np.asarray(values))

    def forward(self) -> None:
        for layer in self.layers:
            layer.forward()

    def backward(self) -> None:
        for layer in self.backward_layers:
            for top in layer.tops:
                views = self._views.get(top.name)
                if views:  # every blob with views has at least two consumers
                    self.backend.xp.add(views[0].diff, views[1].diff, out=top.diff)
                    for view in views[2:]:
                        top.diff += view.diff
            layer.backward()

    def forward_backward(self) -> None:
        self.forward()
        self.backward()

    def gradients_finite(self) -> bool:
        """True when every parameter gradient is finite (one BLAS dot, cheap)."""
        grad = self.params.grad
        return math.isfinite(float(self.backend.xp.dot(grad, grad)))

    def loss(self) -> float:
        """Sum of the loss layers' values for the last forward (synchronises the device)."""
        return sum(layer.loss for layer in self.loss_layers)

    def loss_by_layer(self) -> dict[str, float]:
        return {layer.config.name: layer.loss for layer in self.loss_layers}

    def fetch(self, name: str) -> np.ndarray:
        """A host copy of a blob's data."""
        return self.backend.to_host(self.blobs[name].data).copy()

    def first_nonfinite(self) -> str | None:
        """Name where NaN/Inf first appears: a layer's top or loss, else the first layer in
        backward order whose parameter gradient or gradient into a bottom is not finite."""
        finite = self.backend.all_finite
        for layer in self.layers:
            for top in layer.tops:
                if not finite(top.data):
                    return f"layer {layer.config.name!r} (blob {top.name!r})"
            if layer.loss_value is not None and not finite(layer.loss_value):
                return f"layer {layer.config.name!r} (loss)"
        for layer in self.backward_layers:
            for param in layer.params:
                if not finite(param.grad):
                    return f"layer {layer.config.name!r} (gradient of {param.key!r})"
            for blob in layer.bottoms:
                if blob.diff is not None and not finite(blob.diff):
                    return f"layer {layer.config.name!r} (gradient into blob {blob.name!r})"
        return None

    # -- state ------------------------------------------------------------------------------------
    def layer_states(self) -> dict[str, dict[str, np.ndarray]]:
        return {layer.config.name: layer.state_dict() for layer in self.layers}

    def load_layer_states(self, states: dict[str, dict[str, np.ndarray]]) -> None:
        for layer in self.layers:
            if layer.config.name in states:
                layer.load_state_dict(states[layer.config.name])

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.config.name == name:
                return layer
        raise KeyError(name)

    def describe(self) -> list[tuple[str, str, str, int]]:
        """(layer, type, top shapes, parameter count) per layer, for `mochapy check`."""
        rows = []
        for layer in self.layers:
            shapes = ", ".join(f"{t.name}{list(t.shape)}" for t in layer.tops) or "-"
            count = sum(p.size for p in layer.params)
            rows.append((layer.config.name, layer.config.type_name, shapes, count))
        return rows

    @property
    def n_params(self) -> int:
        return self.params.size

    def close(self) -> None:
        """Finish the sinks (output layers' files appear only now)."""
        for layer in self.sinks:
            layer.close()

    def discard_outputs(self) -> None:
        """Drop what the sinks wrote so far: a failed run leaves no half-filled file."""
        for layer in self.sinks:
            layer.discard()
