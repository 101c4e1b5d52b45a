"""NoiseLevel: each image's log pixel-noise sd, estimated from the image itself (no parameters).

Why: a galaxy VAE's decoder sd can only be as right as its latent lets it be, and an MLP encoder
hardly learns a second-order statistic such as the noise level from raw pixels. This layer hands
it one: log sigma_hat per image, from the absolute differences of horizontally adjacent pixels
(sqrt(2) sigma apart for white noise; smooth galaxy light barely moves them), averaged after
dropping those above `clip` times their mean (edges, stars), and scaled so that sigma_hat = sigma
for white Gaussian noise. With `lag` > 1 the differences are of pixels `lag` apart: noise that
resampling has correlated between neighbours is seen whole, not only its high frequencies.
A huge clip keeps every difference: the image's pixel-scale roughness, noise and fine structure
together. Images whose differences are all zero get log(floor).

bottom: images (N, C, H, W); top: (N, 1). Data-only: no gradient flows back into the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mochapy.layers.base import Layer, LayerConfig, register_layer


def calibration(clip: float) -> float:
    """E[|d| ; |d| < clip E|d|] / P(|d| < clip E|d|) for d ~ N(0, 2): the clipped mean absolute
    difference of unit white noise, which sigma_hat divides by."""
    sd = math.sqrt(2.0)
    a = clip * math.sqrt(2.0 / math.pi)  # the clip point in units of sd(d)
    return sd * math.sqrt(2.0 / math.pi) * (1.0 - math.exp(-a * a / 2)) / math.erf(a / math.sqrt(2))


def log_noise_sd(
    images: np.ndarray, floor: float, clip: float = 3.0, lag: int = 1
) -> np.ndarray:
    """log sigma_hat for each image of `images` (N, C, H, W), as the layer computes it."""
    images = np.asarray(images)
    d = np.abs(images[..., lag:] - images[..., :-lag]).reshape(len(images), -1)
    mean = d.mean(axis=1, keepdims=True, dtype=np.float64)  # sums in double, as on the GPU
    kept = d < clip * mean
    count = kept.sum(axis=1)
    clipped = np.where(kept, d, 0).sum(axis=1, dtype=np.float64) / np.maximum(count, 1)
    clipped = np.where(count > 0, clipped, mean[:, 0])
    return np.log(np.maximum(clipped / calibration(clip), floor))


@register_layer
@dataclass(frozen=True)
class NoiseLevelConfig(LayerConfig):
    floor: float = 1e-6  # sigma_hat never falls below this (data units), so the log is finite
    clip: float = 3.0  # differences above clip times their mean are dropped
    lag: int = 1  # differences of pixels this far apart along a row

    type_name = "NoiseLevel"

    def validate(self) -> None:
        super().validate()
        self.require(self.floor > 0, "floor", "must be positive")
        self.require(self.clip > 0, "clip", "must be positive")
        self.require(self.lag >= 1, "lag", "must be 1 or more")


class NoiseLevelLayer(Layer):
    config: NoiseLevelConfig

    def setup(self) -> None:
        x = self.bottoms[0]
        lag = self.config.lag
        if len(x.shape) != 4 or x.shape[-1] <= lag:
            raise self.fail(f"bottom {x.name!r} must hold images (N, C, H, W > lag = {lag}), "
                            f"has {x.shape}")
        self.y = self.make_top(self.config.tops[0], (x.shape[0], 1))
        self.calibration = calibration(self.config.clip)

    def _forward_cpu(self) -> None:
        self.y.data[:, 0] = log_noise_sd(
            self.bottoms[0].data, self.config.floor, self.config.clip, self.config.lag
        )

    def _forward_gpu(self) -> None:
        cfg = self.config
        self.backend.kernels.noise_level(
            self.bottoms[0].data, cfg.clip, self.calibration, cfg.floor, cfg.lag, self.y.data
        )


NoiseLevelConfig.layer_class = NoiseLevelLayer
