"""The stamp convention: centre, r50, 11 r50 crop, anti-aliased resampling, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from galaxy_model import stamps

SIDE = 120


def exponential_disc(centre: tuple[float, float], r50: float, flux: float = 5e4,
                     sky: float = 100.0, noise: float = 2.0, seed: int = 0) -> np.ndarray:
    """A round exponential profile (r50 = 1.678 h) on a flat sky with Gaussian noise."""
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    radius = np.hypot(rows - centre[0], cols - centre[1])
    scale = r50 / 1.678
    light = flux / (2 * np.pi * scale**2) * np.exp(-radius / scale)
    noise_field = np.random.default_rng(seed).normal(0, noise, (SIDE, SIDE))
    return (light + sky + noise_field).astype(np.float32)


def test_measure_finds_centre_and_half_light_radius() -> None:
    truths = [((60.3, 58.6), 6.0), ((52.0, 66.5), 10.0), ((61.0, 59.0), 3.0)]
    images = np.stack([exponential_disc(c, r, seed=i) for i, (c, r) in enumerate(truths)])
    centres, r50 = stamps.measure(images)
    for (centre, radius), found_centre, found_r50 in zip(truths, centres, r50, strict=True):
        assert np.allclose(found_centre, centre, atol=0.25)
        # The segment stops at 3 sigma, so a few percent of the light is missed.
        assert found_r50 == pytest.approx(radius, rel=0.06)


def test_measure_ignores_a_separate_neighbour_and_deblends_a_touching_one() -> None:
    alone = exponential_disc((60, 60), 5.0)
    apart = alone + exponential_disc((20, 95), 5.0, sky=0, noise=0)
    touching = alone + exponential_disc((60, 80), 5.0, sky=0, noise=0)
    centres, r50 = stamps.measure(np.stack([alone, apart, touching]))
    assert np.allclose(centres[1], centres[0], atol=0.05)
    assert r50[1] == pytest.approx(r50[0], rel=0.02)
    assert abs(centres[2, 1] - 60) < 2.0 and r50[2] < 1.3 * r50[0]


def test_measure_uses_a_given_segmentation_mask() -> None:
    image = exponential_disc((60, 60), 5.0)[None]
    everything = np.ones(image.shape, bool)
    left_half = everything.copy()
    left_half[..., 60:] = False
    centre_all, _ = stamps.measure(image, everything)
    centre_left, _ = stamps.measure(image, left_half)
    assert abs(centre_all[0, 1] - 60) < 0.5 and centre_left[0, 1] < 57


def test_cutout_spans_11_half_light_radii_centred_on_the_galaxy() -> None:
    image = exponential_disc((57.4, 62.2), 4.0, noise=0.0)[None, None]
    centres, r50 = stamps.measure(image[:, 0])
    cut = stamps.cutout(image, centres, r50, size=69)
    assert cut.shape == (1, 1, 69, 69)
    assert np.unravel_index(cut[0, 0].argmax(), (69, 69)) == (34, 34)
    again_centre, again_r50 = stamps.measure(cut[:, 0])
    assert np.allclose(again_centre, 34, atol=0.15)
    assert again_r50[0] == pytest.approx(69 / stamps.STAMP_SIDE_IN_R50, rel=0.08)


def test_downscaling_averages_areas_and_upscaling_interpolates() -> None:
    rng = np.random.default_rng(1)
    noise = rng.random((1, 1, 200, 200)).astype(np.float32)
    whole = stamps.cutout(noise, np.array([[99.5, 99.5]]), np.array([200 / 11]), size=50)
    assert whole.mean() == pytest.approx(noise.mean(), rel=1e-5)  # exact area average
    assert whole.std() < noise.std() / 3  # 4x4 pixel blocks average the noise down
    ramp = np.tile(np.arange(40, dtype=np.float32), (40, 1))[None, None]
    zoom = stamps.cutout(ramp, np.array([[20.0, 20.0]]), np.array([10 / 11]), size=20)
    steps = np.diff(zoom[0, 0, 10])
    assert np.allclose(steps, 0.5, atol=1e-5)  # bilinear: a ramp stays a ramp


def test_cutout_repeats_edge_pixels_beyond_the_image() -> None:
    image = np.full((1, 1, 30, 30), 7.0, np.float32)
    cut = stamps.cutout(image, np.array([[2.0, 2.0]]), np.array([5.0]), size=20)
    assert np.allclose(cut, 7.0)


def test_cutout_variance_matches_the_spread_of_resampled_noise() -> None:
    rng = np.random.default_rng(2)
    draws = rng.normal(0, 1, (400, 1, 64, 64)).astype(np.float32)
    centres = np.full((400, 2), 31.5)
    r50 = np.full(400, 40 / 11)
    measured = stamps.cutout(draws, centres, r50, size=20).var(axis=0)
    predicted = stamps.cutout_variance(np.ones((1, 1, 64, 64), np.float32), centres[:1],
                                       r50[:1], size=20)[0]
    assert np.median(measured / predicted) == pytest.approx(1.0, abs=0.1)


def test_normalise_subtracts_the_border_sky_and_scales_by_a_robust_peak() -> None:
    image = exponential_disc((34, 34), 6.0, noise=0.5)[None, None, 26:95, 26:95]
    hot = image.copy()
    hot[0, 0, 5, 60] = 1e6  # one hot pixel must not set the scale
    colour = np.concatenate([image, 2 * image], axis=1)
    data, scale, offset = stamps.normalise(np.concatenate([image, hot]))
    assert offset[:, 0] == pytest.approx(100.0, abs=0.5)
    assert scale[0] <= scale[1] < 1.2 * scale[0]
    assert np.percentile(data[0], 99.9) == pytest.approx(1.0)
    assert np.allclose(data * scale[:, None, None, None] + offset[:, :, None, None],
                       np.concatenate([image, hot]), rtol=1e-5, atol=1e-3)
    colour_data, _, _ = stamps.normalise(colour)
    ratio = colour_data[0, 1, 34, 34] / colour_data[0, 0, 34, 34]
    assert ratio == pytest.approx(2.0, rel=1e-3)  # one scale for all bands keeps colours


def test_make_stamps_runs_the_three_steps_on_the_band_sum() -> None:
    image = exponential_disc((60, 60), 5.0)
    colour = np.stack([image, 0.5 * image, 2 * image])[None]
    made = stamps.make_stamps(colour)
    assert made.data.shape == (1, 3, 69, 69) and made.offset.shape == (1, 3)
    assert np.allclose(made.centres, 60, atol=0.25)
