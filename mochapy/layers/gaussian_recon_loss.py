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

Survey data (`ivar_bottom`, `mask_bottom`): the bottoms become [mu, sigma, x, ivar] or
[mu, sigma, x, mask] or [mu, sigma, x, ivar, mask], ivar the inverse variance of each measured
pixel and mask 1 at bad pixels (the dataset file's convention). A pixel is used where mask is 0
and ivar > 0; unused pixels add nothing to the loss (not even log 2pi) and get zero gradients.
`variance` says what sigma is the sd of:
    model             x ~ N(mu, sigma^2): the poster's form; ivar only marks unused pixels
    model_plus_noise  x ~ N(mu, sigma^2 + 1/ivar): sigma is the model's own spread on top of the
                      measured noise, v = sigma^2 + 1/ivar;
                      loss = 0.5 w/n sum_used [log 2pi + log v + (x - mu)^2 / v],
                      dmu = w/n (mu - x) / v,  dsigma = w/n sigma (1 - (x - mu)^2 / v) / v.
beta's weight is v^beta, and mean_sd's gradient is taken at used pixels only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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
    ivar_bottom: bool = False  # the next bottom after x is each pixel's inverse variance
    mask_bottom: bool = False  # the last bottom is each pixel's bad-pixel flag (1 = bad)
    variance: Literal["model", "model_plus_noise"] = "model"

    type_name = "GaussianReconLoss"
    has_loss = True
    can_do_bp = True
    is_sink = True
    n_bottoms = (3, None)
    n_tops = 0

    @property
    def noise_variance(self) -> bool:
        return self.variance == "model_plus_noise"

    def validate(self) -> None:
        super().validate()
        expected = 3 + self.ivar_bottom + self.mask_bottom
        named = ["mu", "sigma", "x"] + ["ivar"] * self.ivar_bottom + ["mask"] * self.mask_bottom
        self.require(len(self.bottoms) == expected, "bottoms",
                     f"must be [{', '.join(named)}] ({expected} blobs; ivar_bottom and "
                     f"mask_bottom add one each), got {len(self.bottoms)}")
        self.require(self.ivar_bottom or not self.noise_variance, "variance",
                     "model_plus_noise needs the ivar bottom (ivar_bottom: true)")
        self.require(0.0 <= self.beta <= 1.0, "beta", "must lie in [0, 1]")
        self.require(self.mean_sd >= 0.0, "mean_sd", "must be positive (0: off)")
        self.require(not (self.beta and self.mean_sd), "mean_sd",
                     "excludes beta (both reweight the mean's gradient)")


class GaussianReconLossLayer(Layer):
    config: GaussianReconLossConfig

    def setup(self) -> None:
        mu = self.bottoms[0]
        for blob in self.bottoms[1:]:
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
        cfg = self.config
        self.masked = cfg.ivar_bottom or cfg.mask_bottom
        self.ivar = self.bottoms[3] if cfg.ivar_bottom else None
        self.mask = self.bottoms[-1] if cfg.mask_bottom else None
        self.used = self.backend.empty(shape) if self.masked else None
        if self.backend.kind == "cpu" and self.backend.kernels is not None:
            self.block_sums = np.zeros(loss_blocks(self.residual.size))

    def _forward_cpu(self) -> None:
        if self.backend.kernels is not None:
            if self.masked:
                self._forward_compiled_masked()
            else:
                self._forward_compiled()
            return
        if self.masked:
            self._forward_cpu_masked()
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

    def _forward_compiled_masked(self) -> None:
        """The compiled loop over used pixels; it sums the whole loss, log terms included."""
        mu, sigma, x = self.bottoms[:3]
        dmu = None if mu.diff is None else mu.flat_diff()
        dsigma = None if sigma.diff is None else sigma.flat_diff()
        if (dmu is None) != (dsigma is None):
            dmu, dsigma = (self.residual if d is None else d for d in (dmu, dsigma))
        total = self.backend.kernels.gaussian_recon_loss_masked(
            mu.flat(), sigma.flat(), x.flat(),
            None if self.ivar is None else self.ivar.flat(),
            None if self.mask is None else self.mask.flat(),
            self.config.noise_variance, self.scale, self.config.beta, self.mean_inv_var,
            dmu, dsigma, self.block_sums,
        )
        self.loss_value[0] = 0.5 * self.scale * total

    def _forward_cpu_masked(self) -> None:
        """NumPy: inv_var holds 1/v at used pixels and 0 elsewhere, so their gradients vanish."""
        mu, sigma, x = (b.flat() for b in self.bottoms[:3])
        used, r, inv_var = self.used, self.residual, self.inv_var
        used.fill(1.0)
        if self.mask is not None:
            used *= self.mask.flat() == 0
        if self.ivar is not None:
            used *= self.ivar.flat() > 0
        np.subtract(x, mu, out=r)
        np.multiply(sigma, sigma, out=inv_var)
        if self.config.noise_variance:
            ivar = self.ivar.flat()
            inv_var += np.divide(1.0, ivar, out=np.zeros_like(ivar), where=ivar > 0)
        log_variance = float(np.log(inv_var, where=used > 0, out=np.zeros_like(inv_var)).sum())
        np.divide(used, inv_var, out=inv_var)
        weighted_sq = float(np.einsum("ij,ij,ij->", r, r, inv_var, optimize=False))
        total = float(used.sum()) * LOG_2PI + log_variance + weighted_sq
        self.loss_value[0] = 0.5 * self.scale * total

    def _backward_cpu(self) -> None:
        if self.backend.kernels is not None:
            return  # the compiled forward wrote the gradients
        mu_blob, sigma_blob = self.bottoms[:2]
        r, inv_var, s = self.residual, self.inv_var, self.scale
        weight = self._beta_weight() if self.config.beta else None
        if mu_blob.diff is not None:
            d = mu_blob.flat_diff()
            if self.mean_inv_var:
                np.multiply(r, -s * self.mean_inv_var, out=d)
                if self.masked:
                    d *= self.used
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
            if self.config.noise_variance:  # d/dsigma of log v + r^2/v is 2 sigma (1 - r^2/v)/v
                d *= sigma_blob.flat()
                d *= inv_var
            else:
                d /= sigma_blob.flat()
                if self.masked:
                    d *= self.used
            d *= s
            if weight is not None:
                d *= weight

    def _beta_weight(self) -> np.ndarray:
        """v^beta = inv_var^(-beta), the beta-NLL weight of each pixel's gradients (1 at unused
        pixels, whose gradients are zero anyway)."""
        inv_var = self.inv_var
        if self.masked:
            inv_var = np.where(self.used > 0, inv_var, 1.0)
        np.power(inv_var, -self.config.beta, out=self.pixel_weight)
        return self.pixel_weight

    def _forward_gpu(self) -> None:
        # One kernel computes the loss and, in training, both gradients (backward has no work).
        mu, sigma, x = self.bottoms[:3]
        self.backend.kernels.gaussian_recon_loss(
            mu.flat(), sigma.flat(), x.flat(), self.scale, self.config.beta, self.mean_inv_var,
            self.loss_value,
            None if mu.diff is None else mu.flat_diff(),
            None if sigma.diff is None else sigma.flat_diff(),
            None if self.ivar is None else self.ivar.flat(),
            None if self.mask is None else self.mask.flat(),
            self.config.noise_variance,
        )

    def _backward_gpu(self) -> None:
        """The forward kernel already wrote the gradients."""


GaussianReconLossConfig.layer_class = GaussianReconLossLayer
