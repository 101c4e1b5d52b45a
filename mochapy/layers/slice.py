"""Slice: one bottom cut along `axis` at `slice_point`s into consecutive tops (Caffe's Slice).

Why: the inverse of Concat, e.g. the decoder's mean reading only the first 32 coordinates of a
latent whose last few carry image statistics for the sd. A top nobody reads is allowed (its
gradient stays zero). Plain array copies, so the NumPy and CuPy paths are the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from mochapy.layers.base import AxisConfig, Layer, along_axis, register_layer


@register_layer
@dataclass(frozen=True)
class SliceConfig(AxisConfig):
    slice_point: tuple[int, ...] = ()

    type_name = "Slice"
    n_tops = (2, None)

    def validate(self) -> None:
        super().validate()
        points = self.slice_point
        self.require(len(points) == len(self.tops) - 1, "slice_point",
                     f"needs one point fewer than tops ({len(self.tops) - 1}), has {len(points)}")
        self.require(all(a < b for a, b in zip((0, *points), points, strict=False)),
                     "slice_point", "must be positive and increasing")


class SliceLayer(Layer):
    config: SliceConfig

    def setup(self) -> None:
        axis, shape = self.config.axis, self.bottoms[0].shape
        if len(shape) <= axis or self.config.slice_point[-1] >= shape[axis]:
            raise self.fail(f"slice_point {list(self.config.slice_point)} does not fit axis "
                            f"{axis} of bottom {self.bottoms[0].name!r} {shape}")
        bounds = pairwise([0, *self.config.slice_point, shape[axis]])
        self.parts = []
        for name, (lo, hi) in zip(self.config.tops, bounds, strict=True):
            self.parts.append(along_axis(axis, lo, hi))
            self.make_top(name, (*shape[:axis], hi - lo, *shape[axis + 1:]))

    def _forward_cpu(self) -> None:
        for part, top in zip(self.parts, self.tops, strict=True):
            top.data[...] = self.bottoms[0].data[part]

    def _backward_cpu(self) -> None:
        x = self.bottoms[0]
        if x.diff is None:
            return
        for part, top in zip(self.parts, self.tops, strict=True):
            x.diff[part] = top.diff

    _forward_gpu = _forward_cpu
    _backward_gpu = _backward_cpu


SliceConfig.layer_class = SliceLayer
