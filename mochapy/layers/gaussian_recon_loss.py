"""GaussianReconLoss: -log N(x; mu, sigma^2) averaged over the batch (Regier's Latte.jl layer).

bottoms [mu, sigma, x], sigma a standard deviation, n the batch size, w the weight:
    loss = 0.5 w/n sum[log 2pi + 2 log sigma + (x - mu)^2 / sigma^2]
    dmu = w/n (mu - x) / sigma^2,  dsigma = w/n (1/sigma - (x - mu)^2 / sigma^3);  none into x.

`beta` > 0 gives the beta-NLL gradients of Seitzer et al. (2022): both gradients are multiplied by
sigma^(2 beta), held constant. With beta = 1 the mean learns as under squared error, whatever the
sd, so a large sd cannot stop the mean from fitting bright pixels; the loss value is unchanged.

`mean_sd` > 0 decouples the two heads instead: the mean's gradient is taken as if every sigma were
mean_sd, dmu = w/n (mu - x) / mean_sd^2 (squared error at a fixed sd), while sigma keeps its
likelihood gradient. Layers shared by both heads (the decoder's hidden layers, the encoder) can then
learn what predicts each image's sd, such as its noise level, without the sd steering the mean
towards the faint background. The loss value is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mochapy.backends.cpu_kernels import loss_blocks
from mochapy.layers.base import Layer, LayerConfig, register_layer

LOG_2PI = math.log(2 * math.pi)


@register_layer
@dataclass(frozen=True)
class GaussianReconLossConfig(LayerConfig):
    weight: float = 1.0
    beta: float = 0.0
    mean_sd: float = 0.0

    type_name = "GaussianReconLoss"
    has_loss = True
    can_do_bp = True
    is_sink = True
    n_bottoms = 3
    n_tops = 0

    def validate(self) -> None:
        super().validate()
        self.require(0.0 <= self.beta <= 1.0, "beta", "must lie in [0, 1]")
        self.require(self.mean_sd >= 0.0, "mean_sd", "must be positive (0: off)")
        self.require(not (self.beta and self.mean_sd), "mean_sd",
                     "excludes beta (both reweight the mean's gradient)")


class GaussianReconLossLayer(Layer):
    config: GaussianReconLossConfig

    def setup(self) -> None:
        mu, sigma, x = self.bottoms
        for blob in (sigma, x):
            if blob.flat().shape != mu.flat().shape:
                raise self.fail(
                    f"bottom {blob.name!r} has shape {blob.shape}, but {mu.name!r} has {mu.shape}"
                )
        shape = mu.flat().shape
        self.residual = self.backend.empty(shape)
        self.inv_var = self.backend.empty(shape)
        self.pixel_weight = self.backend.empty(shape) if self.config.beta else None
        self.scale = self.config.weight / mu.batch_size
        self.mean_inv_var = self.config.mean_sd**-2 if self.config.mean_sd else 0.0
        self.loss_value = self.backend.zeros(1)
        if self.backend.kind == "cpu" and self.backend.kernels is not None:
            self.block_sums = np.zeros(loss_blocks(self.residual.size))

    def _forward_cpu(self) -> None:
        if self.backend.kernels is not None:
            self._forward_compiled()
            return
        mu, sigma, x = (b.flat() for b in self.bottoms)
        r, inv_var = self.residual, self.inv_var
        np.subtract(x, mu, out=r)
        np.multiply(sigma, sigma, out=inv_var)
        np.reciprocal(inv_var, out=inv_var)
        log_sigma_sum = float(np.log(sigma).sum())
        weighted_sq = float(np.einsum("ij,ij,ij->", r, r, inv_var, optimize=False))
        total = r.size * LOG_2PI + 2 * log_sigma_sum + weighted_sq
        self.loss_value[0] = 0.5 * self.scale * total

    def _forward_compiled(self) -> None:
        """One pass of the compiled loop: the squared z-scores' sum and, in training, both
        gradients (backward has no work); the log-sd sum in NumPy, whose log is vectorised."""
        mu, sigma, x = self.bottoms
        dmu = None if mu.diff is None else mu.flat_diff()
        dsigma = None if sigma.diff is None else sigma.flat_diff()
        if (dmu is None) != (dsigma is None):  # the loop writes both or neither
            dmu, dsigma = (self.residual if d is None else d for d in (dmu, dsigma))
        weighted_sq = self.backend.kernels.gaussian_recon_loss(
            mu.flat(), sigma.flat(), x.flat(), self.scale, self.config.beta, self.mean_inv_var,
            dmu, dsigma, self.block_sums,
        )
        log_sigma_sum = float(np.log(sigma.flat(), out=self.residual).sum())
        total = self.residual.size * LOG_2PI + 2 * log_sigma_sum + weighted_sq
        self.loss_value[0] = 0.5 * self.scale * total

    def _backward_cpu(self) -> None:
        if self.backend.kernels is not None:
            return  # the compiled forward wrote the gradients
        mu_blob, sigma_blob, _ = self.bottoms
        r, inv_var, s = self.residual, self.inv_var, self.scale
        weight = self._beta_weight() if self.config.beta else None
        if mu_blob.diff is not None:
            d = mu_blob.flat_diff()
            if self.mean_inv_var:
                np.multiply(r, -s * self.mean_inv_var, out=d)
            else:
                np.multiply(r, inv_var, out=d)
                d *= -s
            if weight is not None:
                d *= weight
        if sigma_blob.diff is not None:
            d = sigma_blob.flat_diff()
            np.multiply(r, r, out=d)
            d *= inv_var
            np.subtract(1.0, d, out=d)
            d /= sigma_blob.flat()
            d *= s
            if weight is not None:
                d *= weight

    def _beta_weight(self) -> np.ndarray:
        """sigma^(2 beta) = inv_var^(-beta), the beta-NLL weight of each pixel's gradients."""
        np.power(self.inv_var, -self.config.beta, out=self.pixel_weight)
        return self.pixel_weight

    def _forward_gpu(self) -> None:
        # One kernel computes the loss and, in training, both gradients (backward has no work).
        mu, sigma, x = self.bottoms
        self.backend.kernels.gaussian_recon_loss(
            mu.flat(), sigma.flat(), x.flat(), self.scale, self.config.beta, self.mean_inv_var,
            self.loss_value,
            None if mu.diff is None else mu.flat_diff(),
            None if sigma.diff is None else sigma.flat_diff(),
        )

    def _backward_gpu(self) -> None:
        """The forward kernel already wrote the gradients."""


GaussianReconLossConfig.layer_class = GaussianReconLossLayer
