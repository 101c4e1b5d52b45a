"""NoiseLevel: the clipped mean difference of neighbouring pixels, calibrated, against the
formula written out and against known noise; it takes no gradient. On every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config


def _noise_level(backend, images: np.ndarray, **fields) -> np.ndarray:
    config = make_config("NoiseLevel", name="noise", bottoms=["x"], tops=["y"], **fields)
    harness = LayerHarness(config, {"x": images}, grad_bottoms=(), backend=backend)
    harness.layer.forward()
    return harness.top()[:, 0]


def test_noise_level_recovers_the_sd_of_white_noise_under_smooth_light(rng, backend) -> None:
    sd = np.array([1e-3, 1e-2, 0.3])
    yy, xx = np.mgrid[:128, :128] - 63.5
    light = np.exp(-(xx**2 + yy**2) / (2 * 20.0**2))  # a smooth "galaxy", 5 sd at its peak
    images = sd[:, None, None, None] * (5 * light + rng.normal(size=(3, 2, 128, 128)))
    np.testing.assert_allclose(np.exp(_noise_level(backend, images)), sd, rtol=0.03)


def test_noise_level_ignores_a_few_sharp_edges(rng, backend) -> None:
    images = 0.01 * rng.normal(size=(2, 1, 64, 64))
    images[:, :, :, 32:] += 5.0  # a step in every row: 64 huge differences among 4032
    np.testing.assert_allclose(np.exp(_noise_level(backend, images)), 0.01, rtol=0.05)


def test_noise_level_is_the_clipped_mean_difference_written_out(rng, backend) -> None:
    images = rng.normal(size=(3, 2, 3, 5)) * rng.choice([1.0, 20.0], size=(3, 2, 3, 5), p=[.9, .1])
    got = _noise_level(backend, images)
    # E|d| clipped at 3 E|d| for d ~ N(0, 2), by numerical integration of the half-normal density
    t = np.linspace(0, 3 * 2 / math.sqrt(math.pi), 200_001)
    density = np.exp(-t**2 / 4) / math.sqrt(math.pi)
    calibration = np.trapezoid(t * density, t) / np.trapezoid(density, t)
    for image, value in zip(images, got, strict=True):
        diffs = [abs(row[c + 1] - row[c]) for band in image for row in band for c in range(4)]
        mean = sum(diffs) / len(diffs)
        kept = [d for d in diffs if d < 3 * mean]
        assert value == pytest.approx(math.log(sum(kept) / len(kept) / calibration), rel=1e-9)


def test_noise_level_with_a_huge_clip_is_the_plain_mean_difference(rng, backend) -> None:
    images = rng.normal(size=(2, 1, 6, 9)) * rng.choice([1.0, 50.0], size=(2, 1, 6, 9), p=[.9, .1])
    plain = np.abs(np.diff(images, axis=-1)).reshape(2, -1).mean(axis=1)
    got = _noise_level(backend, images, clip=1e30)  # E|d| = 2 sigma / sqrt(pi) for white noise
    np.testing.assert_allclose(got, np.log(plain * math.sqrt(math.pi) / 2), rtol=1e-12)


def test_noise_level_with_a_lag_differences_pixels_that_far_apart(rng, backend) -> None:
    white = rng.normal(size=(400, 400))
    correlated = (white + np.roll(white, 1, axis=1)) / math.sqrt(2)  # sd 1, neighbours at 0.5
    images = 0.02 * correlated[None, None]
    got = [math.exp(_noise_level(backend, images, lag=lag)[0]) for lag in (1, 2)]
    assert got[0] == pytest.approx(0.02 * math.sqrt(0.5), rel=0.02)  # sees half the variance
    assert got[1] == pytest.approx(0.02, rel=0.02)  # past the correlation: all of it
    plain = np.abs(images[..., 3:] - images[..., :-3]).mean()
    assert _noise_level(backend, images, clip=1e30, lag=3)[0] == pytest.approx(
        math.log(plain * math.sqrt(math.pi) / 2), rel=1e-9)


def test_noise_level_of_a_flat_image_is_the_floor(backend) -> None:
    got = _noise_level(backend, np.full((2, 1, 4, 4), 0.5), floor=1e-4)
    np.testing.assert_allclose(got, math.log(1e-4))


def test_noise_level_needs_images_and_takes_no_gradient() -> None:
    config = make_config("NoiseLevel", name="noise", bottoms=["x"], tops=["y"])
    assert not config.can_do_bp and not config.has_param
    with pytest.raises(ConfigError, match="'noise'.*images"):
        LayerHarness(config, {"x": np.zeros((2, 16))})
    with pytest.raises(ConfigError, match="'noise'.*lag = 4"):
        LayerHarness(make_config("NoiseLevel", name="noise", bottoms=["x"],
                                 tops=["y"], lag=4), {"x": np.zeros((2, 1, 4, 4))})
    for field in ("floor", "clip", "lag"):
        with pytest.raises(ConfigError, match=f"'noise'.*{field}"):
            make_config("NoiseLevel", name="noise", bottoms=["x"], tops=["y"], **{field: 0})
