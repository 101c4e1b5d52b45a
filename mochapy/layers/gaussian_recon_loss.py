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

from dataclasses import dataclass
from typing import Literal

from mochapy.layers.base import Layer, LayerConfig, register_layer


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
        cfg = self.config
        self.scale = cfg.weight / mu.batch_size
        self.mean_inv_var = cfg.mean_sd**-2 if cfg.mean_sd else 0.0
        self.loss_value = self.backend.zeros(1)
        self.ivar = self.bottoms[3] if cfg.ivar_bottom else None
        self.mask = self.bottoms[-1] if cfg.mask_bottom else None

    def _forward_cpu(self) -> None:
        """One kernel call: the loss and, in training, both gradients (backward has no work)."""
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

    def _backward_cpu(self) -> None:
        """The forward's kernel call already wrote the gradients."""

    _forward_gpu = _forward_cpu
    _backward_gpu = _backward_cpu


GaussianReconLossConfig.layer_class = GaussianReconLossLayer
