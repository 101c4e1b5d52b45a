"""ContrastLevel: y = neuron(m + (1 + a) (x - m) + b) per row, m the row's mean of x, (a, b) a
second bottom of shape (N, 2).

Why: a decoder's log-sd map is right in shape for one image and too contrasted for another: on a
faint galaxy the residual is flat noise, on a bright one it follows the light. Scaling each image's
log-sd map about its own mean by 1 + a and shifting it by b, with (a, b) computed per image by a
small head, gives the sd that freedom; (a, b) = (0, 0) leaves the map as it was, so a head whose
last layer starts at zero starts from the trained net exactly. The NumPy and CuPy paths share
the array code; the neuron runs its own kernel on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mochapy.layers.base import Layer, LayerConfig, register_layer
from mochapy.neurons import Identity, Neuron


@register_layer
@dataclass(frozen=True)
class ContrastLevelConfig(LayerConfig):
    neuron: Neuron = field(default_factory=Identity)

    type_name = "ContrastLevel"
    can_do_bp = True
    n_bottoms = 2


class ContrastLevelLayer(Layer):
    config: ContrastLevelConfig

    def setup(self) -> None:
        x, ab = self.bottoms
        if len(ab.shape) != 2 or ab.shape != (x.shape[0], 2):
            raise self.fail(f"bottom {ab.name!r} must be (N, 2) = ({x.shape[0]}, 2): one (a, b) "
                            f"per row of {x.name!r}, has {ab.shape}")
        self.rows = (x.shape[0], x.data.size // x.shape[0])
        self.y = self.make_top(self.config.tops[0], x.shape)
        self.pre = self.backend.empty(self.rows)  # neuron input, kept for its backward
        self.dpre = self.backend.empty(self.rows)

    def _forward_cpu(self) -> None:
        xp = self.backend.xp
        x = self.bottoms[0].data.reshape(self.rows)
        a, b = self.bottoms[1].data[:, :1], self.bottoms[1].data[:, 1:]
        mean = x.mean(axis=1, keepdims=True)
        xp.subtract(x, mean, out=self.pre)
        self.pre *= 1 + a
        self.pre += mean + b
        self.config.neuron.forward(self.backend, self.pre, self.y.data.reshape(self.rows))

    def _backward_cpu(self) -> None:
        x, ab = self.bottoms
        dy = self.y.diff.reshape(self.rows)
        self.config.neuron.backward(self.backend, self.pre, self.y.data.reshape(self.rows), dy,
                                    self.dpre)
        a = ab.data[:, :1]
        if ab.diff is not None:
            rows = x.data.reshape(self.rows)
            centred = rows - rows.mean(axis=1, keepdims=True)
            ab.diff[:, 0] = (self.dpre * centred).sum(axis=1)
            ab.diff[:, 1] = self.dpre.sum(axis=1)
        if x.diff is not None:  # du_j/dx_k = (1 + a) [j = k] - a / D
            dx = x.diff.reshape(self.rows)
            mean = self.dpre.mean(axis=1, keepdims=True)
            self.backend.xp.multiply(self.dpre, 1 + a, out=dx)
            dx -= a * mean

    _forward_gpu = _forward_cpu
    _backward_gpu = _backward_cpu


ContrastLevelConfig.layer_class = ContrastLevelLayer
