"""GaussianKLLoss: KL(N(mu, sigma^2) || N(0, I)) averaged over the batch.

bottoms [mu, sigma]: loss = 0.5 w/n sum[mu^2 + sigma^2 - 2 log sigma - 1];
dmu = w mu / n, dsigma = w (sigma - 1/sigma) / n. (Mocha's original formula was wrong.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mochapy.layers.base import register_layer
from mochapy.layers.pair_loss import PairLossConfig, PairLossLayer


@register_layer
@dataclass(frozen=True)
class GaussianKLLossConfig(PairLossConfig):
    type_name = "GaussianKLLoss"


class GaussianKLLossLayer(PairLossLayer):
    config: GaussianKLLossConfig
    gpu_kernel = "gaussian_kl_loss"

    def _forward_cpu(self) -> None:
        mu, sigma = (b.flat() for b in self.bottoms)
        total = np.dot(mu.ravel(), mu.ravel()) + np.dot(sigma.ravel(), sigma.ravel())
        total -= 2 * np.log(sigma).sum() + mu.size
        self.loss_value[0] = 0.5 * self.scale * total

    def _backward_cpu(self) -> None:
        mu, sigma = self.bottoms
        if mu.diff is not None:
            np.multiply(mu.flat(), self.scale, out=mu.flat_diff())
        if sigma.diff is not None:
            d = sigma.flat_diff()
            np.reciprocal(sigma.flat(), out=d)
            np.subtract(sigma.flat(), d, out=d)
            d *= self.scale


GaussianKLLossConfig.layer_class = GaussianKLLossLayer
