"""A survey-like synthetic galaxy sample, deterministic by seed (the built-in training data).

Each image is rendered on a 96 x 96 canvas larger than the stamp, observed, turned into a colour
photograph and then cut out exactly like real data (galaxy_model.stamps: measure -> cutout ->
normalise):

- the central galaxy is an elliptical (Sérsic n 2.5-6), a lenticular (bulge + disc, maybe a bar),
  a spiral (Sérsic bulge n 1-4, inclined exponential disc, 2-4 logarithmic arms of varying pitch,
  width and strength or 6-8 weak flocculent ones; bars that feed the arms; star-forming clumps
  strung along the arms; a dust lane when seen nearly edge-on), an irregular (lopsided diffuse
  light and many clumps) or a merger (a companion and curved tidal tails); all orientations,
  inclinations and axis ratios occur;
- neighbouring galaxies (Sérsic, 3-120 % of its flux) and foreground stars scattered over the
  field, some inside the stamp;
- a Moffat point-spread function whose width runs from a quarter of the galaxy's half-light radius
  to about its size, so some galaxies are well resolved and others barely;
- sky, Poisson noise (in its Gaussian limit: every pixel holds tens of counts or more) and read
  noise at signal-to-noise ratios of 100-3000 within 2 r50, rounded to whole counts;
- the photograph: as in the SDSS colour images that Galaxy Zoo shows and in the Hubble XDF picture
  of the real split, the sky is subtracted and an asinh stretch (Lupton et al. 2004) with a
  softening of 2-20 sky sigmas maps counts to display values in [0, 1] on a dark sky (0.05),
  saturating the brightest cores (flagged in `mask`), in 8-bit steps. The stretch is what makes
  the faint disc, arms, tails and neighbours as prominent as in real photographs.

The stamp spans 11 measured half-light radii of the photograph. Where that would not fit on the
canvas (about a fifth of the galaxies, whose stretched wings reach far), the scene is rendered
again seen through a wider field (zoom down to 0.5; neighbours and stars are drawn over a field
four times the canvas' area for this); the ~1 % that still do not fit get the largest stamp the
canvas holds.

`ivar` propagates the noise model through the stretch (to first order), the resampling and the
normalisation; saturated pixels get ivar 0 and mask 1. With bands=3 (stored i, r, g: red first, as
the R, G, B planes of a JPEG) bulges, bars and ellipticals are red, discs bluer, arms and clumps
bluest.

The distributions that a survey pins down (morphology mix, shapes, bars, neighbours, stars,
seeing, S/N) come from a galaxy_model.populations.Population: SYNTH_V1 (the default, described
above) or GZ_V1 (Galaxy-Zoo-2-like, from cited published values); the code is the same.

Everything runs on whole batches (float32 arrays of images). Randomness comes from PCG64 streams:
chunk i of seed S uses SeedSequence(S, spawn_key=(i,)) only, so any chunk can be rendered alone or
in another process, and image j of seed S does not depend on how many images were asked for.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields, replace

import numpy as np
import scipy.fft
from scipy.special import gammaln
from tqdm import tqdm

from galaxy_model import stamps
from galaxy_model.dataset import GalaxyDataset
from galaxy_model.populations import MORPHOLOGIES, SYNTH_V1, Population

GENERATOR_VERSION = SYNTH_V1.version  # the default population's version
CHUNK_SIZE = 250
CANVAS = 96
# Half-light radius of the central galaxy's light before the stretch; the photograph's measured
# r50 comes out about 1.5 times larger, so an 11 r50 stamp spans most of the canvas.
TARGET_R50_PX = 3.6

SERSIC_TRUNCATION = 6.0  # in r_e
SKY_COUNTS = (40.0, 400.0)  # per pixel, log-uniform
READ_NOISE = (3.0, 8.0)  # counts, uniform
SOFTENING_IN_SKY_SIGMA = (2.0, 20.0)  # asinh softening / sky noise, log-uniform
DISPLAY_MAX_IN_PEAK = (0.3, 1.0)  # counts shown as white / galaxy peak, log-uniform
DISPLAY_SKY = 0.05
DISPLAY_LEVELS = 255

BAND_NAMES = ("g", "r", "i")
_REFERENCE_BAND = 1  # the single band rendered when bands=1

# Colours as (g, r, i) flux ratios relative to r.
_RED = np.array([0.45, 1.0, 1.35], np.float32)
_DISC = np.array([0.75, 1.0, 1.12], np.float32)
_BLUE = np.array([1.25, 1.0, 0.82], np.float32)
_BAR = 0.5 * (_RED + _DISC)
_SKY_COLOUR = np.array([0.55, 1.0, 1.45], np.float32)

_MAX_NEIGHBOURS = 24
_MAX_STARS = 8
_MAX_CLUMPS = 24
_TAIL_POINTS = 40
_EDGE_ON_COS = 0.35  # discs seen closer to edge-on than this get a dust lane and a thin profile
_CENTRE = (CANVAS - 1) / 2
# Neighbours and stars are scattered over a field twice the canvas' side (four times its area),
# so that images shown at zoom < 1 see a correspondingly wider field.
_FIELD_HALF_WIDTH = CANVAS
FIELD_AREA_IN_CANVASES = 4
_MIN_ZOOM = 0.5
_ZOOM_PASSES = 2


def sersic_b(n: np.ndarray) -> np.ndarray:
    """b_n of the Sérsic profile exp(-b_n (r/r_e)^(1/n)), so that r_e encloses half the light."""
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)


def _rotate(x: np.ndarray, y: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) rotated counter-clockwise by `angle`."""
    cos, sin = np.cos(angle), np.sin(angle)
    return x * cos - y * sin, x * sin + y * cos


def _column(values: np.ndarray) -> np.ndarray:
    """(k,) -> float32 (k, 1, 1), to broadcast one value per image over its pixels."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size) -> np.ndarray:
    return np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]), size))


class _Canvas:
    """The light of a batch of images, in three layers that get different blurs.

    Scenes are described in field pixels (canvas pixels at zoom 1, centred on the canvas); image
    i shows its field magnified by zoom[i] <= 1, so a large galaxy can be shown whole.
    """

    def __init__(self, zoom: np.ndarray, bands: int) -> None:
        self.zoom = np.asarray(zoom, dtype=np.float64)
        self.count = len(self.zoom)
        self.bands = bands
        # Three bands are stored red first (i, r, g), like the R, G, B planes of a colour JPEG.
        self.band_index = [_REFERENCE_BAND] if bands == 1 else [2, 1, 0]
        field = _CENTRE + (np.arange(CANVAS) - _CENTRE) / self.zoom[:, None]
        self.rows = field.astype(np.float32)[:, :, None]
        self.cols = field.astype(np.float32)[:, None, :]
        shape = (self.count, bands, CANVAS, CANVAS)
        self.smooth = np.zeros(shape, np.float32)  # blurred by the PSF only
        self.clumps = np.zeros(shape, np.float32)  # blurred by a clump size, then the PSF
        self.tails = np.zeros(shape, np.float32)  # blurred by a wide Gaussian, then the PSF

    def to_canvas(self, index: np.ndarray, field_position: np.ndarray) -> np.ndarray:
        """Canvas pixel coordinates of field positions of the images `index`."""
        return _CENTRE + (field_position - _CENTRE) * self.zoom[index]

    def colour(self, sed: np.ndarray) -> np.ndarray:
        """(..., 3) (g, r, i) flux ratios -> the rendered bands, (..., bands)."""
        return np.asarray(sed, np.float32)[..., self.band_index]

    def add_profile(self, index: np.ndarray, profile: np.ndarray, flux: np.ndarray,
                    sed: np.ndarray) -> None:
        """Add `profile` (k, H, W), rescaled to total `flux` (k,), in colour `sed` to the images."""
        if len(index) == 0:
            return
        total = profile.sum(axis=(1, 2), dtype=np.float64)
        weight = (np.asarray(flux) / np.maximum(total, 1e-30)).astype(np.float32)
        coloured = weight[:, None] * np.broadcast_to(self.colour(sed), (len(index), self.bands))
        self.smooth[index] += coloured[:, :, None, None] * profile[:, None]

    def splat(self, layer: np.ndarray, index: np.ndarray, row: np.ndarray, col: np.ndarray,
              flux: np.ndarray) -> None:
        """Deposit point fluxes (k, bands) at field (row, col) of images `index`, bilinearly."""
        if len(index) == 0:
            return
        row, col = self.to_canvas(index, row), self.to_canvas(index, col)
        top = np.floor(row).astype(np.int64)
        left = np.floor(col).astype(np.int64)
        below = row - top
        right = col - left
        positions, weights = [], []
        for d_row, w_row in ((0, 1 - below), (1, below)):
            for d_col, w_col in ((0, 1 - right), (1, right)):
                r, c = top + d_row, left + d_col
                inside = (r >= 0) & (r < CANVAS) & (c >= 0) & (c < CANVAS)
                for band in range(self.bands):
                    flat = ((index * self.bands + band) * CANVAS + r) * CANVAS + c
                    positions.append(flat[inside])
                    weights.append((w_row * w_col * flux[:, band])[inside])
        deposit = np.bincount(np.concatenate(positions), np.concatenate(weights),
                              minlength=layer.size)
        layer += deposit.reshape(layer.shape).astype(np.float32)

    def frame(self, index: np.ndarray, centre: np.ndarray,
              angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Field coordinates (u along the major axis, v along the minor axis) around `centre`
        (k, 2) over the canvas of each image in `index`, each (k, H, W)."""
        cos, sin = _column(np.cos(angle)), _column(np.sin(angle))
        d_row = self.rows[index] - _column(centre[:, 0])
        d_col = self.cols[index] - _column(centre[:, 1])
        return d_col * cos + d_row * sin, d_row * cos - d_col * sin

    def elliptical_radius(self, index: np.ndarray, centre: np.ndarray, angle: np.ndarray,
                          axis_ratio: np.ndarray) -> np.ndarray:
        """sqrt(u² + (v/q)²), softened by a fraction of a pixel at the centre, (k, H, W)."""
        u, v = self.frame(index, centre, angle)
        return np.sqrt(u * u + (v / _column(axis_ratio)) ** 2 + np.float32(0.05))

    def sersic(self, index: np.ndarray, centre: np.ndarray, r_e: np.ndarray, n: np.ndarray,
               axis_ratio: np.ndarray, angle: np.ndarray) -> np.ndarray:
        """exp(-b_n (r / r_e)^(1/n)) for each image in `index`, (k, H, W), fading out beyond
        SERSIC_TRUNCATION r_e as real haloes do (untruncated n = 6 wings fill any field)."""
        radius = self.elliptical_radius(index, centre, angle, axis_ratio) / _column(r_e)
        power = np.exp(np.log(radius) / _column(n))
        fade = (radius * np.float32(1 / SERSIC_TRUNCATION)) ** 4
        return np.exp(-_column(sersic_b(n)) * power - fade)


@dataclass
class _Central:
    """Draws for the central galaxies of a chunk: arrays of one value (or row) per image."""

    kind: dict[str, np.ndarray]
    centre: np.ndarray  # (k, 2): row, col in field pixels
    size: np.ndarray  # half-light radius scale (px, before the stretch)
    angle: np.ndarray
    cos_inclination: np.ndarray
    disc_axis_ratio: np.ndarray
    disc_scale: np.ndarray
    share: np.ndarray  # flux of the central galaxy's own light (the rest: companion, tails)
    bulge_share: np.ndarray
    bulge_n: np.ndarray
    bulge_size: np.ndarray
    bulge_axis_ratio: np.ndarray
    bulge_angle: np.ndarray
    arm_count: np.ndarray
    has_arms: np.ndarray
    pitch: np.ndarray
    arm_strength: np.ndarray
    arm_power: np.ndarray
    arm_phase: np.ndarray
    has_bar: np.ndarray
    bar_share: np.ndarray
    bar_length: np.ndarray
    bar_axis_ratio: np.ndarray
    bar_angle: np.ndarray
    has_dust: np.ndarray
    dust_depth: np.ndarray
    dust_width: np.ndarray
    dust_offset: np.ndarray
    clump_share: np.ndarray
    clump_count: np.ndarray
    clump_radius: np.ndarray  # (k, _MAX_CLUMPS)
    clump_arm: np.ndarray
    clump_jitter: np.ndarray
    clump_weight: np.ndarray
    scatter: np.ndarray  # (k, _MAX_CLUMPS, 2): irregulars' clump offsets in units of `spread`
    spread: np.ndarray  # (k, 2)
    lopsided_strength: np.ndarray
    lopsided_angle: np.ndarray
    lopsided_shift: np.ndarray  # (k, 2)
    companion_share: np.ndarray
    companion_distance: np.ndarray
    companion_direction: np.ndarray
    companion_size: np.ndarray
    companion_n: np.ndarray
    companion_axis_ratio: np.ndarray
    companion_angle: np.ndarray
    tail_share: np.ndarray
    tail_count: np.ndarray
    tail_length: np.ndarray  # (k, 2)
    tail_curl: np.ndarray
    tail_start: np.ndarray
    tail_scatter: np.ndarray  # (k, 2, _TAIL_POINTS, 2)
    colour_jitter: np.ndarray  # (k, 3)


def _draw_central(rng: np.random.Generator, count: int, population: Population) -> _Central:
    """Survey-like mix of types, sizes, shapes, orientations and structures."""
    kind_index = rng.choice(len(MORPHOLOGIES), size=count, p=population.morphology_shares)
    kind = {name: kind_index == i for i, name in enumerate(MORPHOLOGIES)}
    size = TARGET_R50_PX * np.exp(rng.normal(0, 0.12, count))
    cos_inclination = rng.uniform(0.04, 1, count)
    thickness = rng.uniform(*population.disc_thickness, count)
    disc_axis_ratio = np.sqrt(cos_inclination**2 + thickness**2 * (1 - cos_inclination**2))
    is_disc = ~kind["elliptical"] & ~kind["irregular"]
    bulge_share = np.select(
        [kind["elliptical"], kind["lenticular"], kind["spiral"], kind["irregular"]],
        [np.ones(count), rng.uniform(0.3, 0.75, count), rng.uniform(0, 0.6, count) ** 1.6,
         np.zeros(count)],
        default=rng.uniform(0.2, 1.0, count),
    )
    if population.bulge_share_scale != 1:
        has_disc_and_bulge = kind["lenticular"] | kind["spiral"]
        scaled = np.minimum(bulge_share * population.bulge_share_scale, 1.0)
        bulge_share = np.where(has_disc_and_bulge, scaled, bulge_share)
    disc_scale = size * rng.uniform(0.9, 1.25, count) / 1.678
    arm_count = rng.choice([2, 3, 4, 6, 8], size=count, p=[0.5, 0.18, 0.14, 0.1, 0.08])
    flocculent = arm_count >= 6
    pitch = np.radians(rng.uniform(10, 35, count))
    has_bar = (kind["spiral"] & (rng.uniform(size=count) < population.spiral_bar_fraction)) | (
        kind["lenticular"] & (rng.uniform(size=count) < population.lenticular_bar_fraction)
    )
    bar_length = disc_scale * rng.uniform(0.9, 1.8, count)
    bar_angle = rng.uniform(0, np.pi, count)
    # A barred two-armed spiral starts its arms at the ends of the bar.
    arm_phase = np.where(
        has_bar & (arm_count == 2),
        -2 * (bar_angle - np.log(bar_length / disc_scale) / np.tan(pitch)),
        rng.uniform(0, 2 * np.pi, count),
    )
    dust_width = rng.uniform(0.25, 0.6, count) * np.maximum(disc_axis_ratio * disc_scale, 0.7)
    companion_share = rng.uniform(0.2, 0.9, count)
    tail_share = rng.uniform(0.06, 0.2, count)
    merger = kind["merger"]
    return _Central(
        kind=kind,
        centre=_CENTRE + rng.normal(0, 0.8, (count, 2)),
        size=size,
        angle=rng.uniform(0, np.pi, count),
        cos_inclination=cos_inclination,
        disc_axis_ratio=disc_axis_ratio,
        disc_scale=disc_scale,
        share=np.where(merger, (1 - tail_share) / (1 + companion_share), 1.0),
        bulge_share=bulge_share,
        bulge_n=np.select(
            [kind["elliptical"], kind["lenticular"]],
            [rng.uniform(2.5, 6, count), rng.uniform(1.5, 4.5, count)],
            default=rng.uniform(1, 4, count),
        ),
        bulge_size=np.where(is_disc, size * rng.uniform(0.15, 0.5, count), size),
        bulge_axis_ratio=np.where(
            is_disc,
            np.maximum(disc_axis_ratio, rng.uniform(0.55, 1, count)),
            np.clip(rng.normal(*population.elliptical_axis_ratio, count), 0.3, 1),
        ),
        bulge_angle=rng.normal(0, 0.1, count) * is_disc,
        arm_count=arm_count,
        has_arms=kind["spiral"] | (merger & (rng.uniform(size=count) < 0.4)),
        pitch=pitch,
        arm_strength=np.minimum(
            population.arm_strength_scale
            * np.where(flocculent, rng.uniform(0.2, 0.5, count), rng.uniform(0.35, 0.95, count)),
            1.0,
        ),
        arm_power=np.where(flocculent, rng.uniform(1, 3, count), rng.uniform(2, 7, count)),
        arm_phase=arm_phase,
        has_bar=has_bar,
        bar_share=np.where(has_bar, rng.uniform(0.06, 0.2, count), 0),
        bar_length=bar_length,
        bar_axis_ratio=rng.uniform(0.2, 0.38, count),
        bar_angle=bar_angle,
        has_dust=is_disc & (cos_inclination < _EDGE_ON_COS) & (bulge_share < 0.8),
        dust_depth=rng.uniform(0.4, 0.9, count),
        dust_width=dust_width,
        dust_offset=rng.normal(0, 0.4, count) * dust_width * (cos_inclination / _EDGE_ON_COS),
        clump_share=np.select(
            [kind["spiral"], kind["irregular"], merger],
            [rng.uniform(0, 0.2, count), rng.uniform(0.25, 0.6, count),
             rng.uniform(0, 0.1, count)],
            default=np.zeros(count),
        ),
        clump_count=np.where(kind["irregular"], rng.integers(6, _MAX_CLUMPS + 1, count),
                             rng.integers(2, 16, count)),
        clump_radius=disc_scale[:, None] * rng.gamma(2.0, 1.0, (count, _MAX_CLUMPS)),
        clump_arm=rng.integers(0, 8, (count, _MAX_CLUMPS)),
        clump_jitter=rng.normal(0, 0.18, (count, _MAX_CLUMPS)),
        clump_weight=rng.exponential(1.0, (count, _MAX_CLUMPS)),
        scatter=rng.normal(0, 1, (count, _MAX_CLUMPS, 2)),
        spread=rng.uniform(0.5, 1.6, (count, 2)) * disc_scale[:, None],
        lopsided_strength=rng.uniform(0.2, 0.7, count),
        lopsided_angle=rng.uniform(0, 2 * np.pi, count),
        lopsided_shift=rng.normal(0, 0.6, (count, 2)) * disc_scale[:, None],
        companion_share=companion_share,
        companion_distance=size * rng.uniform(0.9, 2.6, count),
        companion_direction=rng.uniform(0, 2 * np.pi, count),
        companion_size=size * np.sqrt(companion_share) * rng.uniform(0.7, 1.3, count),
        companion_n=rng.uniform(1, 4, count),
        companion_axis_ratio=rng.uniform(0.4, 1, count),
        companion_angle=rng.uniform(0, np.pi, count),
        tail_share=tail_share,
        tail_count=rng.integers(1, 3, count),
        tail_length=size[:, None] * rng.uniform(2.0, 4.5, (count, 2)),
        tail_curl=rng.uniform(0.6, 2.2, (count, 2)) * rng.choice([-1, 1], (count, 1)),
        tail_start=rng.uniform(0, 2 * np.pi, (count, 2)),
        tail_scatter=rng.normal(0, 1, (count, 2, _TAIL_POINTS, 2)),
        colour_jitter=np.exp(rng.normal(0, 0.08, (count, 3))).astype(np.float32),
    )


def _arm_normalisation(power: np.ndarray) -> np.ndarray:
    """Mean of ((1 + cos φ) / 2)^p over φ, so the arm pattern redistributes the disc's light."""
    return np.exp(gammaln(power + 0.5) - gammaln(power + 1) - 0.5 * math.log(math.pi))


def _apply_dust(canvas: _Canvas, g: _Central, index: np.ndarray, profile: np.ndarray,
                depth_factor: float) -> None:
    """Dim `profile` (k, H, W) of the images `index` by their dust lane, where they have one."""
    dusty = np.flatnonzero(g.has_dust[index])
    if len(dusty) == 0:
        return
    chosen = index[dusty]
    u, v = canvas.frame(chosen, g.centre[chosen], g.angle[chosen])
    across = (v - _column(g.dust_offset[chosen])) / _column(g.dust_width[chosen])
    extent = np.exp(-np.abs(u) / _column(2.5 * g.disc_scale[chosen]))
    depth = _column(depth_factor * g.dust_depth[chosen])
    profile[dusty] *= 1 - depth * np.exp(-0.5 * across * across) * extent


def _render_bulges(canvas: _Canvas, g: _Central) -> None:
    """Sérsic bulges of disc galaxies and the whole light of ellipticals."""
    index = np.flatnonzero(g.bulge_share > 0)
    profile = canvas.sersic(index, g.centre[index], g.bulge_size[index], g.bulge_n[index],
                            g.bulge_axis_ratio[index], g.angle[index] + g.bulge_angle[index])
    _apply_dust(canvas, g, index, profile, depth_factor=0.7)
    flux = (g.bulge_share * g.share * (1 - g.bar_share))[index]
    canvas.add_profile(index, profile, flux, _RED * g.colour_jitter[index])


def _render_discs(canvas: _Canvas, g: _Central) -> None:
    """Inclined exponential discs, split into a smooth part and logarithmic spiral arms."""
    is_disc = ~g.kind["elliptical"] & ~g.kind["irregular"] & (g.bulge_share < 1)
    index = np.flatnonzero(is_disc)
    cos_i = g.cos_inclination[index]
    u, v = canvas.frame(index, g.centre[index], g.angle[index])
    in_plane_v = v / _column(np.maximum(cos_i, 0.15))
    radius = np.sqrt(u * u + in_plane_v * in_plane_v + np.float32(0.05))
    scale = _column(g.disc_scale[index])
    # Nearly edge-on discs get a thin exponential vertical profile.
    edge_on = _column(np.clip((_EDGE_ON_COS - cos_i) / 0.3, 0, 1))
    height = np.maximum(_column(g.disc_scale[index] * g.disc_axis_ratio[index]), np.float32(0.5))
    profile = np.exp(-radius / scale) * ((1 - edge_on) + edge_on * np.exp(-np.abs(v) / height))
    _apply_dust(canvas, g, index, profile, depth_factor=1.0)

    phase = _column(g.arm_count[index]) * (
        np.arctan2(in_plane_v, u) - np.log(radius / scale) / _column(np.tan(g.pitch[index]))
    ) + _column(g.arm_phase[index])
    power = g.arm_power[index]
    pattern = (0.5 + 0.5 * np.cos(phase)) ** _column(power) / _column(_arm_normalisation(power))
    inner = _column(np.maximum(g.bar_length, g.bulge_size)[index])
    strength = _column(g.arm_strength[index] * g.has_arms[index]) * (
        1 - np.exp(-((radius / inner) ** 2))
    )
    smooth = profile * (1 - strength)
    arms = profile * strength * pattern
    smooth_total = smooth.sum(axis=(1, 2), dtype=np.float64)
    arm_total = arms.sum(axis=(1, 2), dtype=np.float64)
    flux = ((1 - g.bulge_share) * g.share * (1 - g.bar_share))[index]
    flux = flux / np.maximum(smooth_total + arm_total, 1e-30)
    jitter = g.colour_jitter[index]
    canvas.add_profile(index, smooth, flux * smooth_total, _DISC * jitter)
    canvas.add_profile(index, arms, flux * arm_total, _BLUE * jitter)


def _render_bars(canvas: _Canvas, g: _Central) -> None:
    """Flat-topped elongated bars in the disc plane, projected onto the sky."""
    index = np.flatnonzero(g.has_bar)
    length = g.bar_length[index]
    along_u = np.cos(g.bar_angle[index]) * length
    along_v = np.sin(g.bar_angle[index]) * length * g.cos_inclination[index]
    projected_length = np.hypot(along_u, along_v)
    width = length * g.bar_axis_ratio[index]
    axis_ratio = np.clip(width / np.maximum(projected_length, 1e-3), 0.15, 1)
    radius = canvas.elliptical_radius(index, g.centre[index],
                                      g.angle[index] + np.arctan2(along_v, along_u), axis_ratio)
    profile = np.exp(-((radius / _column(np.maximum(projected_length, width))) ** 3))
    canvas.add_profile(index, profile, (g.bar_share * g.share)[index],
                       _BAR * g.colour_jitter[index])


def _render_irregulars(canvas: _Canvas, g: _Central) -> None:
    """Off-centre, lopsided diffuse light of irregulars (their clumps come separately)."""
    index = np.flatnonzero(g.kind["irregular"])
    u, v = canvas.frame(index, g.centre[index] + g.lopsided_shift[index], g.angle[index])
    axis_ratio = _column(np.maximum(g.disc_axis_ratio[index], 0.35))
    radius = np.sqrt(u * u + (v / axis_ratio) ** 2 + np.float32(0.05))
    lopsided = 1 + _column(g.lopsided_strength[index]) * np.cos(
        np.arctan2(v, u) - _column(g.lopsided_angle[index])
    )
    profile = np.exp(-radius / (_column(g.disc_scale[index]) * lopsided))
    canvas.add_profile(index, profile, ((1 - g.clump_share) * g.share)[index],
                       _DISC * g.colour_jitter[index])


def _render_clumps(canvas: _Canvas, g: _Central) -> None:
    """Star-forming clumps strung along spiral arms, or scattered over irregulars."""
    present = (np.arange(_MAX_CLUMPS)[None, :] < g.clump_count[:, None]) & (
        g.clump_share[:, None] > 0
    )
    weight = np.where(present, g.clump_weight, 0)
    flux = (g.clump_share * g.share)[:, None] * weight / np.maximum(
        weight.sum(axis=1, keepdims=True), 1e-30
    )
    arm = g.clump_arm % g.arm_count[:, None]
    theta = (
        np.log(np.maximum(g.clump_radius, 1e-3) / g.disc_scale[:, None]) / np.tan(g.pitch)[:, None]
        + (2 * np.pi * arm - g.arm_phase[:, None]) / g.arm_count[:, None]
        + g.clump_jitter
    )
    irregular = g.kind["irregular"][:, None]
    shift_u, shift_v = _rotate(g.lopsided_shift[:, 1], g.lopsided_shift[:, 0], -g.angle)
    u = np.where(irregular, g.scatter[..., 0] * g.spread[:, :1] + shift_u[:, None],
                 g.clump_radius * np.cos(theta))
    v = np.where(irregular, g.scatter[..., 1] * g.spread[:, 1:] + shift_v[:, None],
                 g.clump_radius * np.sin(theta) * g.cos_inclination[:, None])
    d_col, d_row = _rotate(u, v, g.angle[:, None])
    image, slot = np.nonzero(present)
    row = (g.centre[:, :1] + d_row)[image, slot]
    col = (g.centre[:, 1:] + d_col)[image, slot]
    colour = canvas.colour(_BLUE * g.colour_jitter[image])
    canvas.splat(canvas.clumps, image, row, col, flux[image, slot][:, None] * colour)


def _render_mergers(canvas: _Canvas, g: _Central) -> None:
    """A companion galaxy and one or two curved tidal tails for each merger."""
    index = np.flatnonzero(g.kind["merger"])
    direction = np.stack([np.sin(g.companion_direction), np.cos(g.companion_direction)], axis=1)
    companion = g.centre + g.companion_distance[:, None] * direction
    profile = canvas.sersic(index, companion[index], g.companion_size[index],
                            g.companion_n[index], g.companion_axis_ratio[index],
                            g.companion_angle[index])
    canvas.add_profile(index, profile, (g.companion_share * g.share)[index],
                       _BAR * g.colour_jitter[index])

    t = np.linspace(0, 1, _TAIL_POINTS)[None, None, :]
    along = 0.8 * g.size[:, None, None] + t * g.tail_length[:, :, None]
    direction = g.tail_start[:, :, None] + t * g.tail_curl[:, :, None]
    width = 0.35 * (0.3 + 0.7 * t) * g.size[:, None, None]
    tail_row = g.centre[:, :1, None] + along * np.sin(direction) + width * g.tail_scatter[..., 0]
    tail_col = g.centre[:, 1:, None] + along * np.cos(direction) + width * g.tail_scatter[..., 1]
    fade = np.exp(-2.0 * t) * (np.arange(2)[None, :, None] < g.tail_count[:, None, None])
    flux = g.tail_share[:, None, None] * fade / fade.sum(axis=(1, 2), keepdims=True)
    image, tail, point = np.nonzero(g.kind["merger"][:, None, None] & (fade > 0))
    colour = canvas.colour(_DISC * g.colour_jitter[image])
    canvas.splat(canvas.tails, image, tail_row[image, tail, point], tail_col[image, tail, point],
                 flux[image, tail, point][:, None] * colour)


@dataclass
class _Field:
    """Neighbouring galaxies and foreground stars around each central galaxy (field pixels)."""

    neighbour_count: np.ndarray  # (k,)
    neighbour_position: np.ndarray  # (k, _MAX_NEIGHBOURS, 2)
    neighbour_flux: np.ndarray  # (k, _MAX_NEIGHBOURS), relative to the central galaxy
    neighbour_r_e: np.ndarray
    neighbour_n: np.ndarray
    neighbour_axis_ratio: np.ndarray
    neighbour_angle: np.ndarray
    neighbour_sed: np.ndarray  # (k, _MAX_NEIGHBOURS, 3)
    star_count: np.ndarray  # (k,)
    star_position: np.ndarray  # (k, _MAX_STARS, 2)
    star_flux: np.ndarray  # (k, _MAX_STARS)
    star_sed: np.ndarray  # (k, _MAX_STARS, 3)


def _draw_field(rng: np.random.Generator, count: int, size: np.ndarray,
                population: Population) -> _Field:
    """Poisson numbers of neighbours and stars, uniform over the field, varied in flux and form."""
    shape = (count, _MAX_NEIGHBOURS)
    flux = population.neighbour_flux.draw(rng, shape)
    g_over_r = rng.uniform(0.3, 1.4, (count, _MAX_STARS))
    return _Field(
        neighbour_count=np.minimum(
            rng.poisson(FIELD_AREA_IN_CANVASES * population.neighbour_rate, count),
            _MAX_NEIGHBOURS,
        ),
        neighbour_position=_CENTRE + rng.uniform(-1, 1, shape + (2,)) * _FIELD_HALF_WIDTH,
        neighbour_flux=flux,
        neighbour_r_e=np.maximum(
            size[:, None] * np.sqrt(flux) * np.exp(rng.normal(0, 0.35, shape)), 0.6
        ),
        neighbour_n=rng.uniform(0.8, 4.5, shape),
        neighbour_axis_ratio=rng.uniform(0.25, 1, shape),
        neighbour_angle=rng.uniform(0, np.pi, shape),
        neighbour_sed=np.where((rng.uniform(size=shape) < 0.45)[..., None], _RED, _DISC)
        * np.exp(rng.normal(0, 0.1, shape + (3,))),
        star_count=np.minimum(
            rng.poisson(FIELD_AREA_IN_CANVASES * population.star_rate, count), _MAX_STARS
        ),
        star_position=_CENTRE + rng.uniform(-1, 1, (count, _MAX_STARS, 2)) * _FIELD_HALF_WIDTH,
        star_flux=population.star_flux.draw(rng, (count, _MAX_STARS)),
        star_sed=np.stack([g_over_r, np.ones_like(g_over_r), 1 / np.sqrt(g_over_r)], axis=-1),
    )


def _render_field(canvas: _Canvas, field: _Field) -> None:
    """The neighbours and stars that fall on each image's canvas."""
    zoom = canvas.zoom[:, None, None]
    on_canvas = _CENTRE + (field.neighbour_position - _CENTRE) * zoom
    margin = 4 * field.neighbour_r_e * canvas.zoom[:, None]
    visible = (
        (np.arange(_MAX_NEIGHBOURS)[None, :] < field.neighbour_count[:, None])
        & (on_canvas.min(axis=2) > -margin)
        & (on_canvas.max(axis=2) < CANVAS - 1 + margin)
    )
    for slot in np.flatnonzero(visible.any(axis=0)):
        index = np.flatnonzero(visible[:, slot])
        profile = canvas.sersic(index, field.neighbour_position[index, slot],
                                field.neighbour_r_e[index, slot], field.neighbour_n[index, slot],
                                field.neighbour_axis_ratio[index, slot],
                                field.neighbour_angle[index, slot])
        canvas.add_profile(index, profile, field.neighbour_flux[index, slot],
                           field.neighbour_sed[index, slot])
    image, slot = np.nonzero(np.arange(_MAX_STARS)[None, :] < field.star_count[:, None])
    position = field.star_position[image, slot]
    canvas.splat(canvas.smooth, image, position[:, 0], position[:, 1],
                 field.star_flux[image, slot][:, None] * canvas.colour(field.star_sed[image, slot]))


@dataclass
class _Observation:
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


def _draw_observation(rng: np.random.Generator, count: int, bands: int, size: np.ndarray,
                      population: Population) -> _Observation:
    """Seeing, sky, S/N and stretch of each image, varied as in a survey."""
    return _Observation(
        fwhm=size * population.psf_fwhm_in_r50.draw(rng, count),
        beta=rng.uniform(2.5, 5.0, count),
        clump_sigma=rng.uniform(0.4, 1.2, count),
        tail_sigma=rng.uniform(1.2, 2.5, count),
        signal_to_noise=population.signal_to_noise.draw(rng, count),
        sky=_log_uniform(rng, SKY_COUNTS, count),
        read_variance=rng.uniform(*READ_NOISE, count) ** 2,
        softening_in_sigma=_log_uniform(rng, SOFTENING_IN_SKY_SIGMA, count),
        display_max_in_peak=_log_uniform(rng, DISPLAY_MAX_IN_PEAK, count),
        noise=rng.standard_normal((count, bands, CANVAS, CANVAS), dtype=np.float32),
    )


def _take(record, index: np.ndarray):
    """The images `index` of a record of per-image arrays (dicts of arrays included)."""
    def subset(value):
        if isinstance(value, dict):
            return {key: item[index] for key, item in value.items()}
        return value[index]

    return replace(record, **{item.name: subset(getattr(record, item.name))
                              for item in fields(record)})


def _gaussian_transfer(sigma: np.ndarray) -> np.ndarray:
    """Fourier transfer functions (k, 1, H, W//2+1) of unit Gaussians of width `sigma` px."""
    freq_row = np.fft.fftfreq(CANVAS).astype(np.float32)[:, None]
    freq_col = np.fft.rfftfreq(CANVAS).astype(np.float32)[None, :]
    factor = np.float32(-2 * np.pi**2) * np.asarray(sigma, np.float32) ** 2
    return np.exp(factor[:, None, None, None] * (freq_row**2 + freq_col**2))


def _moffat_transfer(fwhm: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Fourier transfer functions (k, 1, H, W//2+1) of unit-flux Moffat PSFs."""
    offset = np.minimum(np.arange(CANVAS), CANVAS - np.arange(CANVAS)).astype(np.float32)
    radius_squared = offset[:, None] ** 2 + offset[None, :] ** 2
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    psf = (1 + radius_squared[None] / _column(alpha**2)) ** -_column(beta)
    psf /= psf.sum(axis=(1, 2), keepdims=True)
    return scipy.fft.rfft2(psf)[:, None]


def scene_parameters(n: int, seed: int = 0,
                     population: Population = SYNTH_V1) -> dict[str, np.ndarray]:
    """The drawn parameters of the first n scenes of `seed` (those synthesize renders), without
    rendering them: what a population's statistics are measured on (galaxy_model.population_check).

    Keys: morphology (index into MORPHOLOGIES), has_bar, cos_inclination, disc_axis_ratio,
    bulge_axis_ratio, neighbour_count and star_count (over the field, FIELD_AREA_IN_CANVASES
    canvases), neighbour_flux and star_flux (k, max) with slots beyond the counts unused,
    psf_fwhm_in_r50 and signal_to_noise.
    """
    parts: list[dict[str, np.ndarray]] = []
    for chunk_index in range(-(-n // CHUNK_SIZE)):
        sequence = np.random.SeedSequence(seed, spawn_key=(chunk_index,))
        rng = np.random.Generator(np.random.PCG64(sequence))
        central = _draw_central(rng, CHUNK_SIZE, population)
        field = _draw_field(rng, CHUNK_SIZE, central.size, population)
        observation = _draw_observation(rng, CHUNK_SIZE, 1, central.size, population)
        kind_index = np.select([central.kind[name] for name in MORPHOLOGIES],
                               list(range(len(MORPHOLOGIES))))
        parts.append({
            "morphology": kind_index,
            "has_bar": central.has_bar,
            "cos_inclination": central.cos_inclination,
            "disc_axis_ratio": central.disc_axis_ratio,
            "bulge_axis_ratio": central.bulge_axis_ratio,
            "neighbour_count": field.neighbour_count,
            "neighbour_flux": field.neighbour_flux,
            "star_count": field.star_count,
            "star_flux": field.star_flux,
            "psf_fwhm_in_r50": observation.fwhm / central.size,
            "signal_to_noise": observation.signal_to_noise,
        })
    return {key: np.concatenate([part[key] for part in parts])[:n] for key in parts[0]}


def render_chunk(seed: int, chunk_index: int, bands: int = 1, size: int = stamps.STAMP_SIZE,
                 count: int | None = None,
                 population: Population = SYNTH_V1) -> tuple[np.ndarray, ...]:
    """Images chunk_index * CHUNK_SIZE + [0, count) of `seed`: (data, ivar, mask, scale, offset).

    Every random number of the full chunk is drawn from SeedSequence(seed, spawn_key=
    (chunk_index,)) whatever `count` (<= CHUNK_SIZE, default all) is and only the first `count`
    images are rendered, so a shorter request returns exactly the leading images of a longer one.

    Images whose 11 r50 stamp would not fit on the canvas are rendered again, up to twice, at a
    zoom that should make it fit (the same scene seen through a wider field), and measured again.
    """
    if bands not in (1, 3):
        raise ValueError(f"bands must be 1 or 3, got {bands}")
    sequence = np.random.SeedSequence(seed, spawn_key=(chunk_index,))
    rng = np.random.Generator(np.random.PCG64(sequence))
    central = _draw_central(rng, CHUNK_SIZE, population)
    field = _draw_field(rng, CHUNK_SIZE, central.size, population)
    observation = _draw_observation(rng, CHUNK_SIZE, bands, central.size, population)
    count = CHUNK_SIZE if count is None else count
    first = np.arange(count)
    central, field, observation = (_take(r, first) for r in (central, field, observation))

    zoom = np.ones(count)
    display, variance, saturated = _photograph(central, field, observation, zoom, bands)
    centres, r50 = stamps.measure(display.sum(axis=1))
    for _ in range(_ZOOM_PASSES):
        fit = _fitting_zoom(centres, r50)
        again = np.flatnonzero((fit < 1) & (zoom > _MIN_ZOOM))
        if len(again) == 0:
            break
        # r50 in canvas pixels shrinks only about as the square root of the zoom: coarser pixels
        # reach deeper isophotes of the stretched photograph.
        zoom[again] = np.maximum(fit[again] ** 2 * zoom[again], _MIN_ZOOM)
        parts = (_take(r, again) for r in (central, field, observation))
        redone = _photograph(*parts, zoom[again], bands)
        display[again], variance[again], saturated[again] = redone
        centres[again], r50[again] = stamps.measure(redone[0].sum(axis=1))
    r50 = r50 * np.minimum(_fitting_zoom(centres, r50), 1)  # the rare image still too large
    return _stamp(display, variance, saturated, centres, r50, size)


def _fitting_zoom(centres: np.ndarray, r50: np.ndarray) -> np.ndarray:
    """How much smaller each galaxy must appear for its 11 r50 stamp to fit on the canvas."""
    room = np.minimum(centres, CANVAS - 1 - centres).min(axis=1) + 0.5
    return 2 * room / (stamps.STAMP_SIDE_IN_R50 * r50)


def _photograph(central: _Central, field: _Field, observation: _Observation, zoom: np.ndarray,
                bands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render, blur, observe and stretch: display images, their variance, saturated pixels."""
    canvas = _Canvas(zoom, bands)
    _render_bulges(canvas, central)
    _render_discs(canvas, central)
    _render_bars(canvas, central)
    _render_irregulars(canvas, central)
    _render_clumps(canvas, central)
    _render_mergers(canvas, central)
    _render_field(canvas, field)
    obs = observation

    # Blur: clumps and tails by their own sizes, then everything by the PSF (canvas pixels).
    spectrum = (
        scipy.fft.rfft2(canvas.smooth)
        + scipy.fft.rfft2(canvas.clumps) * _gaussian_transfer(obs.clump_sigma * zoom)
        + scipy.fft.rfft2(canvas.tails) * _gaussian_transfer(obs.tail_sigma * zoom)
    ) * _moffat_transfer(obs.fwhm * zoom, obs.beta)
    light = np.clip(scipy.fft.irfft2(spectrum, s=(CANVAS, CANVAS)), 0, None).astype(np.float32)

    # Counts: the central galaxy's total from its S/N within a 2 r50 aperture.
    aperture_background = np.pi * (2 * central.size * zoom) ** 2 * (obs.sky + obs.read_variance)
    snr2 = obs.signal_to_noise**2
    total = (snr2 + np.sqrt(snr2**2 + 4 * snr2 * aperture_background)) / 2
    sky = (obs.sky[:, None] * canvas.colour(_SKY_COLOUR)[None]).astype(np.float32)
    sky = sky[:, :, None, None]
    signal = light * _column(total)[:, None]
    variance = signal + sky + _column(obs.read_variance)[:, None]
    counts = np.round(signal + sky + np.sqrt(variance) * obs.noise)

    # The photograph: sky-subtracted asinh stretch, saturating at white, 8 bits.
    window = slice(CANVAS // 2 - 8, CANVAS // 2 + 8)
    peak = signal[:, :, window, window].max(axis=(1, 2, 3))
    softening = _column(obs.softening_in_sigma * np.sqrt(obs.sky + obs.read_variance))[:, None]
    stretch = np.arcsinh(_column(obs.display_max_in_peak * peak)[:, None] / softening)
    display = DISPLAY_SKY + np.arcsinh((counts - sky) / softening) / stretch
    saturated = display >= 1
    display = np.round(np.clip(display, 0, 1) * DISPLAY_LEVELS) / DISPLAY_LEVELS
    slope = 1 / (softening * np.sqrt(1 + (signal / softening) ** 2) * stretch)
    display_variance = variance * slope**2 + np.float32(1 / (12 * DISPLAY_LEVELS**2))
    return display.astype(np.float32), display_variance.astype(np.float32), saturated


def _stamp(display: np.ndarray, variance: np.ndarray, saturated: np.ndarray,
           centres: np.ndarray, r50: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """cutout -> normalise, as for real photographs; ivar and mask follow along."""
    bands = display.shape[1]
    cut = stamps.cutout(np.concatenate([display, saturated], axis=1), centres, r50, size)
    data, scale, offset = stamps.normalise(cut[:, :bands])
    mask = cut[:, bands:] > 0
    stamp_variance = stamps.cutout_variance(variance, centres, r50, size)
    ivar = np.where(mask, 0, scale[:, None, None, None] ** 2 / stamp_variance)
    return data, ivar.astype(np.float32), mask.astype(np.uint8), scale, offset


def _chunk_job(job: tuple[int, int, int, int, int, Population]) -> tuple[np.ndarray, ...]:
    return render_chunk(*job)


def synthesize(n: int, seed: int = 0, bands: int = 1, size: int = stamps.STAMP_SIZE,
               progress: bool = False, workers: int | None = None,
               population: Population = SYNTH_V1) -> GalaxyDataset:
    """n synthetic galaxies of `population` as a normalised GalaxyDataset (see the module
    docstring).

    workers: processes rendering chunks in parallel (forked, so they need no importable __main__;
    default: up to 2, the cores this project targets, once there are at least 4 chunks); the
    output does not depend on it.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if bands not in (1, 3):
        raise ValueError(f"bands must be 1 or 3, got {bands}")
    chunk_count = -(-n // CHUNK_SIZE)
    jobs = [(seed, i, bands, size, min(CHUNK_SIZE, n - i * CHUNK_SIZE), population)
            for i in range(chunk_count)]
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if chunk_count >= 4 else 1
    if "fork" not in multiprocessing.get_all_start_methods():
        workers = 1
    bar = tqdm(total=n, desc="synth", unit="img", disable=not (progress and sys.stderr.isatty()))
    parts = []
    if workers > 1:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for job, part in zip(jobs, pool.map(_chunk_job, jobs), strict=True):
                parts.append(part)
                bar.update(job[4])
    else:
        for job in jobs:
            parts.append(_chunk_job(job))
            bar.update(job[4])
    bar.close()
    data, ivar, mask, scale, offset = (np.concatenate(part) for part in zip(*parts, strict=True))
    return GalaxyDataset(
        data=data,
        ivar=ivar,
        mask=mask,
        scale=scale,
        offset=offset,
        provenance=[f"synth seed={seed} index={i}" for i in range(n)],
        attrs={
            "source": f"galaxy_model.synth {population.version} seed={seed}",
            "generator_version": population.version,
            "population_version": population.version,
            "population": json.dumps(population.describe(), sort_keys=True),
            "seed": seed,
            "raw_units": "display value of an asinh-stretched photograph: sky 0.05, white 1",
            "normalisation": stamps.NORMALISATION_DESCRIPTION,
            "size": size,
            "bands": bands,
            "band_names": ",".join(BAND_NAMES[::-1]) if bands == 3 else BAND_NAMES[_REFERENCE_BAND],
            "stamp_side_in_r50": stamps.STAMP_SIDE_IN_R50,
            "created_by": "galaxy_model.synth.synthesize",
        },
    )
