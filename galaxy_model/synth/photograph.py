"""From a scene to a stamp: render, blur, count photons with noise, stretch into an 8-bit
colour photograph, then cut out and normalise as for real photographs."""

from __future__ import annotations

import numpy as np
import scipy.fft

from galaxy_model import stamps
from galaxy_model.synth.canvas import CANVAS, SKY_COLOUR, Canvas, column
from galaxy_model.synth.field import Field, render_field
from galaxy_model.synth.morphology import Central, render_central
from galaxy_model.synth.observation import Observation, gaussian_transfer, moffat_transfer

DISPLAY_SKY = 0.05
DISPLAY_LEVELS = 255


def photograph(central: Central, field: Field, observation: Observation, zoom: np.ndarray,
                bands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render, blur, observe and stretch: display images, their variance, saturated pixels."""
    canvas = Canvas(zoom, bands)
    render_central(canvas, central)
    render_field(canvas, field)
    obs = observation

    # Blur: clumps and tails by their own sizes, then everything by the PSF (canvas pixels).
    spectrum = (
        scipy.fft.rfft2(canvas.smooth)
        + scipy.fft.rfft2(canvas.clumps) * gaussian_transfer(obs.clump_sigma * zoom)
        + scipy.fft.rfft2(canvas.tails) * gaussian_transfer(obs.tail_sigma * zoom)
    ) * moffat_transfer(obs.fwhm * zoom, obs.beta)
    light = np.clip(scipy.fft.irfft2(spectrum, s=(CANVAS, CANVAS)), 0, None).astype(np.float32)

    # Counts: the central galaxy's total from its S/N within a 2 r50 aperture.
    aperture_background = np.pi * (2 * central.size * zoom) ** 2 * (obs.sky + obs.read_variance)
    snr2 = obs.signal_to_noise**2
    total = (snr2 + np.sqrt(snr2**2 + 4 * snr2 * aperture_background)) / 2
    sky = (obs.sky[:, None] * canvas.colour(SKY_COLOUR)[None]).astype(np.float32)
    sky = sky[:, :, None, None]
    signal = light * column(total)[:, None]
    variance = signal + sky + column(obs.read_variance)[:, None]
    counts = np.round(signal + sky + np.sqrt(variance) * obs.noise)

    # The photograph: sky-subtracted asinh stretch, saturating at white, 8 bits.
    window = slice(CANVAS // 2 - 8, CANVAS // 2 + 8)
    peak = signal[:, :, window, window].max(axis=(1, 2, 3))
    softening = column(obs.softening_in_sigma * np.sqrt(obs.sky + obs.read_variance))[:, None]
    stretch = np.arcsinh(column(obs.display_max_in_peak * peak)[:, None] / softening)
    display = DISPLAY_SKY + np.arcsinh((counts - sky) / softening) / stretch
    saturated = display >= 1
    display = np.round(np.clip(display, 0, 1) * DISPLAY_LEVELS) / DISPLAY_LEVELS
    slope = 1 / (softening * np.sqrt(1 + (signal / softening) ** 2) * stretch)
    display_variance = variance * slope**2 + np.float32(1 / (12 * DISPLAY_LEVELS**2))
    return display.astype(np.float32), display_variance.astype(np.float32), saturated


def to_stamp(display: np.ndarray, variance: np.ndarray, saturated: np.ndarray,
           centres: np.ndarray, r50: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """cutout -> normalise, as for real photographs; ivar and mask follow along."""
    bands = display.shape[1]
    cut = stamps.cutout(np.concatenate([display, saturated], axis=1), centres, r50, size)
    data, scale, offset = stamps.normalise(cut[:, :bands])
    mask = cut[:, bands:] > 0
    stamp_variance = stamps.cutout_variance(variance, centres, r50, size)
    ivar = np.where(mask, 0, scale[:, None, None, None] ** 2 / stamp_variance)
    return data, ivar.astype(np.float32), mask.astype(np.uint8), scale, offset
