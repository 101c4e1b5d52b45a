"""GaussianKLLoss: KL(N(mu, sigma^2) || N(0, I)) averaged over the batch.

bottoms [mu, sigma]: loss = 0.5 w/n sum[mu^2 + sigma^2 - 2 log sigma - 1];
dmu = w mu / n, dsigma = w (sigma - 1/sigma) / n. (Mocha's original formula was wrong.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mochapy.layers.base import Layer, LayerConfig, register_layer


@register_layer
@dataclass(frozen=True)
class GaussianKLLossConfig(LayerConfig):
    weight: float = 1.0

    type_name = "GaussianKLLoss"
    has_loss = True
    can_do_bp = True
    is_sink = True
    n_bottoms = 2
    n_tops = 0


class GaussianKLLossLayer(Layer):
    config: GaussianKLLossConfig

    def setup(self) -> None:
        mu, sigma = self.bottoms
        if sigma.flat().shape != mu.flat().shape:
            raise self.fail(
                f"bottom {sigma.name!r} has shape {sigma.shape}, but {mu.name!r} has {mu.shape}"
            )
        self.scale = self.config.weight / mu.batch_size
        self.loss_value = self.backend.zeros(1)

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

    def _forward_gpu(self) -> None:
        # One kernel computes the loss and, in training, both gradients (backward has no work).
        mu, sigma = self.bottoms
        self.backend.kernels.gaussian_kl_loss(
            mu.flat(), sigma.flat(), self.scale, self.loss_value,
            None if mu.diff is None else mu.flat_diff(),
            None if sigma.diff is None else sigma.flat_diff(),
        )

    def _backward_gpu(self) -> None:
        """The forward kernel already wrote the gradients."""


GaussianKLLossConfig.layer_class = GaussianKLLossLayer
