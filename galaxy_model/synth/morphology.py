"""The central galaxy of each synthetic image: its drawn morphology (elliptical, lenticular,
spiral, irregular, merger; bulge, disc, arms, bar, dust, clumps, companion, tails) and its
rendering onto the canvas."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from galaxy_model.populations import MORPHOLOGIES, Population
from galaxy_model.synth.canvas import BAR, BLUE, CENTRE, DISC, RED, Canvas, column, rotate

# Half-light radius of the central galaxy's light before the stretch; the photograph's measured
# r50 comes out about 1.5 times larger, so an 11 r50 stamp spans most of the canvas.
TARGET_R50_PX = 3.6

_MAX_CLUMPS = 24
_TAIL_POINTS = 40
_EDGE_ON_COS = 0.35  # discs seen closer to edge-on than this get a dust lane and a thin profile


@dataclass
class Central:
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


def draw_central(rng: np.random.Generator, count: int, population: Population) -> Central:
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
    return Central(
        kind=kind,
        centre=CENTRE + rng.normal(0, 0.8, (count, 2)),
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


def _apply_dust(canvas: Canvas, g: Central, index: np.ndarray, profile: np.ndarray,
                depth_factor: float) -> None:
    """Dim `profile` (k, H, W) of the images `index` by their dust lane, where they have one."""
    dusty = np.flatnonzero(g.has_dust[index])
    if len(dusty) == 0:
        return
    chosen = index[dusty]
    u, v = canvas.frame(chosen, g.centre[chosen], g.angle[chosen])
    across = (v - column(g.dust_offset[chosen])) / column(g.dust_width[chosen])
    extent = np.exp(-np.abs(u) / column(2.5 * g.disc_scale[chosen]))
    depth = column(depth_factor * g.dust_depth[chosen])
    profile[dusty] *= 1 - depth * np.exp(-0.5 * across * across) * extent


def _render_bulges(canvas: Canvas, g: Central) -> None:
    """Sérsic bulges of disc galaxies and the whole light of ellipticals."""
    index = np.flatnonzero(g.bulge_share > 0)
    profile = canvas.sersic(index, g.centre[index], g.bulge_size[index], g.bulge_n[index],
                            g.bulge_axis_ratio[index], g.angle[index] + g.bulge_angle[index])
    _apply_dust(canvas, g, index, profile, depth_factor=0.7)
    flux = (g.bulge_share * g.share * (1 - g.bar_share))[index]
    canvas.add_profile(index, profile, flux, RED * g.colour_jitter[index])


def _render_discs(canvas: Canvas, g: Central) -> None:
    """Inclined exponential discs, split into a smooth part and logarithmic spiral arms."""
    is_disc = ~g.kind["elliptical"] & ~g.kind["irregular"] & (g.bulge_share < 1)
    index = np.flatnonzero(is_disc)
    cos_i = g.cos_inclination[index]
    u, v = canvas.frame(index, g.centre[index], g.angle[index])
    in_plane_v = v / column(np.maximum(cos_i, 0.15))
    radius = np.sqrt(u * u + in_plane_v * in_plane_v + np.float32(0.05))
    scale = column(g.disc_scale[index])
    # Nearly edge-on discs get a thin exponential vertical profile.
    edge_on = column(np.clip((_EDGE_ON_COS - cos_i) / 0.3, 0, 1))
    height = np.maximum(column(g.disc_scale[index] * g.disc_axis_ratio[index]), np.float32(0.5))
    profile = np.exp(-radius / scale) * ((1 - edge_on) + edge_on * np.exp(-np.abs(v) / height))
    _apply_dust(canvas, g, index, profile, depth_factor=1.0)

    phase = column(g.arm_count[index]) * (
        np.arctan2(in_plane_v, u) - np.log(radius / scale) / column(np.tan(g.pitch[index]))
    ) + column(g.arm_phase[index])
    power = g.arm_power[index]
    pattern = (0.5 + 0.5 * np.cos(phase)) ** column(power) / column(_arm_normalisation(power))
    inner = column(np.maximum(g.bar_length, g.bulge_size)[index])
    strength = column(g.arm_strength[index] * g.has_arms[index]) * (
        1 - np.exp(-((radius / inner) ** 2))
    )
    smooth = profile * (1 - strength)
    arms = profile * strength * pattern
    smooth_total = smooth.sum(axis=(1, 2), dtype=np.float64)
    arm_total = arms.sum(axis=(1, 2), dtype=np.float64)
    flux = ((1 - g.bulge_share) * g.share * (1 - g.bar_share))[index]
    flux = flux / np.maximum(smooth_total + arm_total, 1e-30)
    jitter = g.colour_jitter[index]
    canvas.add_profile(index, smooth, flux * smooth_total, DISC * jitter)
    canvas.add_profile(index, arms, flux * arm_total, BLUE * jitter)


def _render_bars(canvas: Canvas, g: Central) -> None:
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
    profile = np.exp(-((radius / column(np.maximum(projected_length, width))) ** 3))
    canvas.add_profile(index, profile, (g.bar_share * g.share)[index],
                       BAR * g.colour_jitter[index])


def _render_irregulars(canvas: Canvas, g: Central) -> None:
    """Off-centre, lopsided diffuse light of irregulars (their clumps come separately)."""
    index = np.flatnonzero(g.kind["irregular"])
    u, v = canvas.frame(index, g.centre[index] + g.lopsided_shift[index], g.angle[index])
    axis_ratio = column(np.maximum(g.disc_axis_ratio[index], 0.35))
    radius = np.sqrt(u * u + (v / axis_ratio) ** 2 + np.float32(0.05))
    lopsided = 1 + column(g.lopsided_strength[index]) * np.cos(
        np.arctan2(v, u) - column(g.lopsided_angle[index])
    )
    profile = np.exp(-radius / (column(g.disc_scale[index]) * lopsided))
    canvas.add_profile(index, profile, ((1 - g.clump_share) * g.share)[index],
                       DISC * g.colour_jitter[index])


def _render_clumps(canvas: Canvas, g: Central) -> None:
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
    shift_u, shift_v = rotate(g.lopsided_shift[:, 1], g.lopsided_shift[:, 0], -g.angle)
    u = np.where(irregular, g.scatter[..., 0] * g.spread[:, :1] + shift_u[:, None],
                 g.clump_radius * np.cos(theta))
    v = np.where(irregular, g.scatter[..., 1] * g.spread[:, 1:] + shift_v[:, None],
                 g.clump_radius * np.sin(theta) * g.cos_inclination[:, None])
    d_col, d_row = rotate(u, v, g.angle[:, None])
    image, slot = np.nonzero(present)
    row = (g.centre[:, :1] + d_row)[image, slot]
    col = (g.centre[:, 1:] + d_col)[image, slot]
    colour = canvas.colour(BLUE * g.colour_jitter[image])
    canvas.splat(canvas.clumps, image, row, col, flux[image, slot][:, None] * colour)


def _render_mergers(canvas: Canvas, g: Central) -> None:
    """A companion galaxy and one or two curved tidal tails for each merger."""
    index = np.flatnonzero(g.kind["merger"])
    direction = np.stack([np.sin(g.companion_direction), np.cos(g.companion_direction)], axis=1)
    companion = g.centre + g.companion_distance[:, None] * direction
    profile = canvas.sersic(index, companion[index], g.companion_size[index],
                            g.companion_n[index], g.companion_axis_ratio[index],
                            g.companion_angle[index])
    canvas.add_profile(index, profile, (g.companion_share * g.share)[index],
                       BAR * g.colour_jitter[index])

    t = np.linspace(0, 1, _TAIL_POINTS)[None, None, :]
    along = 0.8 * g.size[:, None, None] + t * g.tail_length[:, :, None]
    direction = g.tail_start[:, :, None] + t * g.tail_curl[:, :, None]
    width = 0.35 * (0.3 + 0.7 * t) * g.size[:, None, None]
    tail_row = g.centre[:, :1, None] + along * np.sin(direction) + width * g.tail_scatter[..., 0]
    tail_col = g.centre[:, 1:, None] + along * np.cos(direction) + width * g.tail_scatter[..., 1]
    fade = np.exp(-2.0 * t) * (np.arange(2)[None, :, None] < g.tail_count[:, None, None])
    flux = g.tail_share[:, None, None] * fade / fade.sum(axis=(1, 2), keepdims=True)
    image, tail, point = np.nonzero(g.kind["merger"][:, None, None] & (fade > 0))
    colour = canvas.colour(DISC * g.colour_jitter[image])
    canvas.splat(canvas.tails, image, tail_row[image, tail, point], tail_col[image, tail, point],
                 flux[image, tail, point][:, None] * colour)


def render_central(canvas: Canvas, g: Central) -> None:
    """Every part of the central galaxies, in a fixed order (the sums are float32)."""
    _render_bulges(canvas, g)
    _render_discs(canvas, g)
    _render_bars(canvas, g)
    _render_irregulars(canvas, g)
    _render_clumps(canvas, g)
    _render_mergers(canvas, g)
