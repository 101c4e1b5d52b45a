"""MemoryOutput: keeps a host copy of its bottoms after every forward (for notebooks and tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mochapy.layers.base import Layer, LayerConfig, register_layer


@register_layer
@dataclass(frozen=True)
class MemoryOutputConfig(LayerConfig):
    type_name = "MemoryOutput"
    is_sink = True
    n_bottoms = (1, None)


class MemoryOutputLayer(Layer):
    config: MemoryOutputConfig

    def setup(self) -> None:
        self.outputs: dict[str, list[np.ndarray]] = {b.name: [] for b in self.bottoms}

    def forward(self) -> None:
        for blob in self.bottoms:
            self.outputs[blob.name].append(self.backend.to_host(blob.data).copy())

    def collected(self) -> dict[str, np.ndarray]:
        """Everything gathered so far, one array per bottom, batches stacked along axis 0."""
        return {k: np.concatenate(v) for k, v in self.outputs.items() if v}

    def reset(self) -> None:
        for batches in self.outputs.values():
            batches.clear()


MemoryOutputConfig.layer_class = MemoryOutputLayer
