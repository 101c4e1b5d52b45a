"""SquareLoss: 0.5 w/n sum (pred - label)^2, Mocha's regression loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mochapy.layers.base import Layer, LayerConfig, register_layer


@register_layer
@dataclass(frozen=True)
class SquareLossConfig(LayerConfig):
    weight: float = 1.0

    type_name = "SquareLoss"
    has_loss = True
    can_do_bp = True
    is_sink = True
    n_bottoms = 2
    n_tops = 0


class SquareLossLayer(Layer):
    config: SquareLossConfig

    def setup(self) -> None:
        pred, label = self.bottoms
        if pred.flat().shape != label.flat().shape:
            raise self.fail(
                f"bottoms {pred.name!r} {pred.shape} and {label.name!r} {label.shape} differ"
            )
        self.residual = self.backend.empty(pred.flat().shape)
        self.scale = self.config.weight / pred.batch_size
        self.loss_value = self.backend.zeros(1)

    def _forward_cpu(self) -> None:
        np.subtract(self.bottoms[0].flat(), self.bottoms[1].flat(), out=self.residual)
        r = self.residual.ravel()
        self.loss_value[0] = 0.5 * self.scale * np.dot(r, r)

    def _backward_cpu(self) -> None:
        pred, label = self.bottoms
        if pred.diff is not None:
            np.multiply(self.residual, self.scale, out=pred.flat_diff())
        if label.diff is not None:
            np.multiply(self.residual, -self.scale, out=label.flat_diff())

    def _forward_gpu(self) -> None:
        # One kernel computes the loss and, in training, both gradients (backward has no work).
        pred, label = self.bottoms
        self.backend.kernels.square_loss(
            pred.flat(), label.flat(), self.scale, self.loss_value,
            None if pred.diff is None else pred.flat_diff(),
            None if label.diff is None else label.flat_diff(),
        )

    def _backward_gpu(self) -> None:
        """The forward kernel already wrote the gradients."""


SquareLossConfig.layer_class = SquareLossLayer
