"""From a scene to a stamp: render, blur, count photons with noise, stretch into an 8-bit
colour photograph, then cut out and normalise as for real photographs.

ivar-v2 (IVAR_VERSION): each displayed pixel's variance is that of clip(asinh stretch of the
noisy counts, 0, 1) over the noise, computed exactly (Gauss-Legendre quadrature between the clip
points, the clipped probabilities from the normal cdf) plus the 8-bit rounding's 1/12 level² where
unclipped. ivar-v1 linearised the stretch and ignored the clip at black, which removes much of the
sky's variance: it overstated the noise variance up to 2.5 x (experiments/ivar_check.py).
What remains: the rounding to 8 bits is taken as independent of the noise; where one count spans
about a whole number of display levels the roundings of counts and of levels beat, and a pixel's
variance is off by up to ~3 % (per image, pooled: within 2 % on 200 gz scenes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.special import ndtr

from galaxy_model import stamps
from galaxy_model.synth.canvas import CANVAS, SKY_COLOUR, Canvas, column
from galaxy_model.synth.field import Field, render_field
from galaxy_model.synth.morphology import Central, render_central
from galaxy_model.synth.observation import Observation, gaussian_transfer, moffat_transfer

DISPLAY_SKY = 0.05
DISPLAY_LEVELS = 255
IVAR_VERSION = "ivar-v2"
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)  # 1e-4 relative, checked on a fine grid
_REACH = 6.0  # noise sigmas integrated over: the probability beyond is 2e-9
_TABLE_SIZE = 256  # points of each image's variance table, uniform in asinh(signal / sky sigma)


@dataclass
class Exposure:
    """A scene before its noise: the counts, their noise and the stretch (canvas pixels)."""

    signal: np.ndarray  # (k, bands, H, W) counts above the sky
    sky: np.ndarray  # (k, bands, 1, 1) counts
    read_variance: np.ndarray  # (k, 1, 1, 1) counts²
    variance: np.ndarray  # (k, bands, H, W) counts², of the noise before rounding to counts
    softening: np.ndarray  # (k, 1, 1, 1) counts
    stretch: np.ndarray  # (k, 1, 1, 1): asinh of the counts shown as white, in softenings


def expose(central: Central, field: Field, observation: Observation, zoom: np.ndarray,
           bands: int) -> Exposure:
    """Render, blur and scale to counts; the stretch from the noiseless peak."""
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
    read_variance = column(obs.read_variance)[:, None]
    variance = signal + sky + read_variance

    # The stretch: sky-subtracted asinh, white at a fraction of the central peak.
    window = slice(CANVAS // 2 - 8, CANVAS // 2 + 8)
    peak = signal[:, :, window, window].max(axis=(1, 2, 3))
    softening = column(obs.softening_in_sigma * np.sqrt(obs.sky + obs.read_variance))[:, None]
    stretch = np.arcsinh(column(obs.display_max_in_peak * peak)[:, None] / softening)
    return Exposure(signal, sky, read_variance, variance, softening, stretch)


def develop(exposure: Exposure, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One noisy photograph of `exposure` (noise: standard normal draws per pixel): whole counts,
    stretched, saturating at white, in 8 bits. Returns (display, saturated)."""
    e = exposure
    counts = np.round(e.signal + e.sky + np.sqrt(e.variance) * noise)
    display = DISPLAY_SKY + np.arcsinh((counts - e.sky) / e.softening) / e.stretch
    saturated = display >= 1
    display = np.round(np.clip(display, 0, 1) * DISPLAY_LEVELS) / DISPLAY_LEVELS
    return display.astype(np.float32), saturated


def display_variance(exposure: Exposure) -> np.ndarray:
    """Each displayed pixel's variance over the noise (float32, as `develop` draws it; ivar-v2).

    Within an image and band the variance depends on the pixel's signal alone, so it is computed
    (float64) on a table uniform in asinh(signal / sky sigma), fine where the clip at black acts,
    and interpolated (within 1e-3 of direct quadrature; synthesis stays about as fast); pixels
    within reach of the clip at white are computed directly. Rounding to whole counts adds
    1/12 count² to the noise's variance.
    """
    e = exposure
    background = (e.sky + e.read_variance).astype(np.float64) + 1 / 12  # (k, bands, 1, 1)
    softening, stretch = e.softening.astype(np.float64), e.stretch.astype(np.float64)
    sky_sigma = np.sqrt(background)
    position = np.arcsinh(e.signal / sky_sigma.astype(np.float32))
    # The largest position falls inside the last interval, so every pixel has a point after it.
    step = np.maximum(position.max(axis=(2, 3), keepdims=True), 1) / (_TABLE_SIZE - 1.5)
    grid = sky_sigma * np.sinh(step.astype(np.float64) * np.arange(_TABLE_SIZE))
    table = _clipped_variance(grid, np.sqrt(grid + background), softening, stretch, np.inf)
    table = table.reshape(-1, _TABLE_SIZE)  # (k * bands, T)
    # Value and rise to the next point side by side, so one gather finds both.
    pairs = (table + 1j * np.diff(table, axis=1, append=0)).astype(np.complex64).ravel()

    position = np.divide(position, step, out=position).reshape(len(table), -1)
    index = position.astype(np.int32)
    fraction = np.subtract(position, index, out=position)
    index += (np.arange(len(table), dtype=np.int32) * _TABLE_SIZE)[:, None]
    pair = pairs.take(index)
    variance = (pair.real + fraction * pair.imag).reshape(e.signal.shape)

    # Near white: from the signal where white - signal = _REACH noise sigmas up.
    white = softening * np.sinh((1 - DISPLAY_SKY) * stretch)
    root = (np.sqrt(_REACH**2 + 4 * (white + background)) - _REACH) / 2
    near = np.nonzero(e.signal > (root**2 - background).astype(np.float32))
    signal = e.signal[near].astype(np.float64)
    at = [np.broadcast_to(value, e.signal.shape)[near]
          for value in (background, softening, stretch, white)]
    variance[near] = _clipped_variance(signal, np.sqrt(signal + at[0]), *at[1:])
    return variance


def _clipped_variance(signal: np.ndarray, sd: np.ndarray, softening: np.ndarray,
                      stretch: np.ndarray, white: np.ndarray | float) -> np.ndarray:
    """Var of the 8-bit clip(DISPLAY_SKY + asinh((signal + sd z) / softening) / stretch, 0, 1),
    z ~ N(0, 1), shown white from `white` counts (np.inf: no clip at white). float64."""
    black = -softening * np.sinh(DISPLAY_SKY * stretch)
    z_black, z_white = (black - signal) / sd, (white - signal) / sd
    start = np.maximum(z_black, -_REACH)
    half = (np.maximum(np.minimum(z_white, _REACH), start) - start) / 2
    centre = np.clip(DISPLAY_SKY + np.arcsinh(signal / softening) / stretch, 0, 1)
    first = np.zeros(np.broadcast_shapes(signal.shape, sd.shape, softening.shape))
    second = np.zeros_like(first)
    for node, weight in zip(_NODES, _WEIGHTS, strict=True):
        z = start + half * (node + 1)
        deviation = DISPLAY_SKY + np.arcsinh((signal + sd * z) / softening) / stretch - centre
        density = weight * np.exp(-z * z / 2)
        first += density * deviation
        second += density * deviation**2
    first *= half / np.sqrt(2 * np.pi)
    second *= half / np.sqrt(2 * np.pi)
    below, above = ndtr(z_black), ndtr(-z_white)
    first += above * (1 - centre) - below * centre
    second += above * (1 - centre) ** 2 + below * centre**2
    rounding = (1 - below - above) / (12 * DISPLAY_LEVELS**2)
    return second - first**2 + rounding


def photograph(central: Central, field: Field, observation: Observation, zoom: np.ndarray,
               bands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render, blur, observe and stretch: display images, their variance, saturated pixels."""
    exposure = expose(central, field, observation, zoom, bands)
    display, saturated = develop(exposure, observation.noise)
    return display, display_variance(exposure), saturated


def to_stamp(display: np.ndarray, variance: np.ndarray, saturated: np.ndarray,
             centres: np.ndarray, r50: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """cutout -> normalise, as for real photographs; ivar and mask follow along (a masked pixel,
    near a saturated one, may have no variance left: its ivar is 0 all the same)."""
    bands = display.shape[1]
    cut = stamps.cutout(np.concatenate([display, saturated], axis=1), centres, r50, size)
    data, scale, offset = stamps.normalise(cut[:, :bands])
    mask = cut[:, bands:] > 0
    stamp_variance = stamps.cutout_variance(variance, centres, r50, size)
    ivar = np.divide(np.broadcast_to(scale[:, None, None, None] ** 2, mask.shape), stamp_variance,
                     out=np.zeros(mask.shape, np.float32), where=~mask)
    return data, ivar, mask.astype(np.uint8), scale, offset
