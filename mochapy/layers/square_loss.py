"""SquareLoss: 0.5 w/n sum (pred - label)^2, Mocha's regression loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mochapy.layers.base import register_layer
from mochapy.layers.pair_loss import PairLossConfig, PairLossLayer


@register_layer
@dataclass(frozen=True)
class SquareLossConfig(PairLossConfig):
    type_name = "SquareLoss"


class SquareLossLayer(PairLossLayer):
    """bottoms [pred, label]."""

    config: SquareLossConfig
    gpu_kernel = "square_loss"

    def setup(self) -> None:
        super().setup()
        self.residual = self.backend.empty(self.bottoms[0].flat().shape)

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


SquareLossConfig.layer_class = SquareLossLayer
