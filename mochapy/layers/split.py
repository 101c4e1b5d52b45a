"""Split: one bottom read as several tops (optional: the net sums gradients of shared blobs)."""

from __future__ import annotations

from dataclasses import dataclass

from mochapy.blob import Blob
from mochapy.layers.base import Layer, LayerConfig, register_layer


@register_layer
@dataclass(frozen=True)
class SplitConfig(LayerConfig):
    type_name = "Split"
    can_do_bp = True
    n_tops = (1, None)


class SplitLayer(Layer):
    config: SplitConfig

    def setup(self) -> None:
        # Tops alias the bottom's data: forward costs nothing.
        for name in self.config.tops:
            self.tops.append(Blob(name, self.bottoms[0].data))

    def _forward_cpu(self) -> None:
        """Nothing to do: every top is a view of the bottom."""

    _forward_gpu = _forward_cpu

    def _backward_cpu(self) -> None:
        x = self.bottoms[0]
        if x.diff is None:
            return
        x.diff[...] = self.tops[0].diff
        for top in self.tops[1:]:
            x.diff += top.diff

    _backward_gpu = _backward_cpu


SplitConfig.layer_class = SplitLayer
