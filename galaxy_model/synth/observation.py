"""How each synthetic image is observed: the point-spread function, the clump and tail blurs,
sky, read noise, signal-to-noise and the display stretch's settings, drawn per image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from galaxy_model.populations import Population
from galaxy_model.synth.canvas import CANVAS, column, log_uniform

SKY_COUNTS = (40.0, 400.0)  # per pixel, log-uniform
READ_NOISE = (3.0, 8.0)  # counts, uniform
SOFTENING_IN_SKY_SIGMA = (2.0, 20.0)  # asinh softening / sky noise, log-uniform
DISPLAY_MAX_IN_PEAK = (0.3, 1.0)  # counts shown as white / galaxy peak, log-uniform


@dataclass
class Observation:
    """PSF, blur, sky, noise and display settings of each image (lengths in field pixels)."""

    fwhm: np.ndarray
    beta: np.ndarray
    clump_sigma: np.ndarray
    tail_sigma: np.ndarray
    signal_to_noise: np.ndarray
    sky: np.ndarray
    read_variance: np.ndarray
    softening_in_sigma: np.ndarray
    display_max_in_peak: np.ndarray
    noise: np.ndarray  # (k, bands, CANVAS, CANVAS) standard normal draws


def draw_observation(rng: np.random.Generator, count: int, bands: int, size: np.ndarray,
                      population: Population) -> Observation:
    """Seeing, sky, S/N and stretch of each image, varied as in a survey."""
    return Observation(
        fwhm=size * population.psf_fwhm_in_r50.draw(rng, count),
        beta=rng.uniform(2.5, 5.0, count),
        clump_sigma=rng.uniform(0.4, 1.2, count),
        tail_sigma=rng.uniform(1.2, 2.5, count),
        signal_to_noise=population.signal_to_noise.draw(rng, count),
        sky=log_uniform(rng, SKY_COUNTS, count),
        read_variance=rng.uniform(*READ_NOISE, count) ** 2,
        softening_in_sigma=log_uniform(rng, SOFTENING_IN_SKY_SIGMA, count),
        display_max_in_peak=log_uniform(rng, DISPLAY_MAX_IN_PEAK, count),
        noise=rng.standard_normal((count, bands, CANVAS, CANVAS), dtype=np.float32),
    )


def gaussian_transfer(sigma: np.ndarray) -> np.ndarray:
    """Fourier transfer functions (k, 1, H, W//2+1) of unit Gaussians of width `sigma` px."""
    freq_row = np.fft.fftfreq(CANVAS).astype(np.float32)[:, None]
    freq_col = np.fft.rfftfreq(CANVAS).astype(np.float32)[None, :]
    factor = np.float32(-2 * np.pi**2) * np.asarray(sigma, np.float32) ** 2
    return np.exp(factor[:, None, None, None] * (freq_row**2 + freq_col**2))


def moffat_transfer(fwhm: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Fourier transfer functions (k, 1, H, W//2+1) of unit-flux Moffat PSFs."""
    offset = np.minimum(np.arange(CANVAS), CANVAS - np.arange(CANVAS)).astype(np.float32)
    radius_squared = offset[:, None] ** 2 + offset[None, :] ** 2
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    psf = (1 + radius_squared[None] / column(alpha**2)) ** -column(beta)
    psf /= psf.sum(axis=(1, 2), keepdims=True)
    return scipy.fft.rfft2(psf)[:, None]
