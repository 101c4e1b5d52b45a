"""Concat: bottoms joined along `axis` (Mocha's ConcatLayer, Caffe's `axis` field).

Why: a latent vector built from parts, e.g. g_mu(x) from the encoder MLP next to a few image
statistics that must reach the decoder unmixed. Every other axis must agree. The top is a copy;
backward hands each bottom its own slice of the top's gradient. Plain array copies, so the NumPy
and CuPy paths are the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from mochapy.layers.base import AxisConfig, Layer, along_axis, register_layer


@register_layer
@dataclass(frozen=True)
class ConcatConfig(AxisConfig):
    type_name = "Concat"
    n_bottoms = (2, None)


class ConcatLayer(Layer):
    config: ConcatConfig

    def setup(self) -> None:
        axis, shapes = self.config.axis, [b.shape for b in self.bottoms]
        if any(len(s) <= axis for s in shapes):
            raise self.fail(f"every bottom needs an axis {axis}; shapes {shapes}")
        rest = {s[:axis] + s[axis + 1:] for s in shapes}
        if len(rest) != 1:
            raise self.fail(f"bottoms differ off axis {axis}: shapes {shapes}")
        widths = [s[axis] for s in shapes]
        bounds = [sum(widths[:k]) for k in range(len(widths) + 1)]
        self.parts = [along_axis(axis, lo, hi) for lo, hi in pairwise(bounds)]
        top_shape = (*shapes[0][:axis], bounds[-1], *shapes[0][axis + 1:])
        self.y = self.make_top(self.config.tops[0], top_shape)

    def _forward_cpu(self) -> None:
        for part, bottom in zip(self.parts, self.bottoms, strict=True):
            self.y.data[part] = bottom.data

    def _backward_cpu(self) -> None:
        for part, bottom in zip(self.parts, self.bottoms, strict=True):
            if bottom.diff is not None:
                bottom.diff[...] = self.y.diff[part]

    _forward_gpu = _forward_cpu
    _backward_gpu = _backward_cpu


ConcatConfig.layer_class = ConcatLayer
