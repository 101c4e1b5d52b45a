"""Slice: one bottom cut along `axis` at `slice_point`s into consecutive tops (Caffe's Slice).

Why: the inverse of Concat, e.g. the decoder's mean reading only the first 32 coordinates of a
latent whose last few carry image statistics for the sd. A top nobody reads is allowed (its
gradient stays zero). Plain array copies, so the NumPy and CuPy paths are the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from mochapy.layers.base import Layer, LayerConfig, register_layer


@register_layer
@dataclass(frozen=True)
class SliceConfig(LayerConfig):
    slice_point: tuple[int, ...] = ()
    axis: int = 1  # counted with the batch axis as 0

    type_name = "Slice"
    can_do_bp = True
    n_tops = (2, None)

    def validate(self) -> None:
        super().validate()
        self.require(self.axis >= 1, "axis", "must be 1 or more (axis 0 is the batch)")
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
        self.bounds = [0, *self.config.slice_point, shape[axis]]
        for k, name in enumerate(self.config.tops):
            width = self.bounds[k + 1] - self.bounds[k]
            self.make_top(name, (*shape[:axis], width, *shape[axis + 1:]))

    def _part(self, array, k: int):
        index = (slice(None),) * self.config.axis + (slice(self.bounds[k], self.bounds[k + 1]),)
        return array[index]

    def _forward_cpu(self) -> None:
        for k, top in enumerate(self.tops):
            top.data[...] = self._part(self.bottoms[0].data, k)

    def _backward_cpu(self) -> None:
        x = self.bottoms[0]
        if x.diff is None:
            return
        for k, top in enumerate(self.tops):
            self._part(x.diff, k)[...] = top.diff

    _forward_gpu = _forward_cpu
    _backward_gpu = _backward_cpu


SliceConfig.layer_class = SliceLayer
