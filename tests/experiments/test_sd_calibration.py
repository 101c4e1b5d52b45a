"""experiments/sd_calibration.py: best per-image sd scale, held-out R^2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from galaxy_model import metrics

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "sd_calibration.py"
spec = importlib.util.spec_from_file_location("sd_calibration", SCRIPT)
sd_calibration = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sd_calibration)


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    mean = rng.uniform(0, 1, size=(5, 1, 9, 9))
    sd = rng.uniform(0.05, 0.3, size=mean.shape)
    x = mean + sd * rng.standard_normal(mean.shape) * rng.uniform(0.5, 2.0, size=(5, 1, 1, 1))
    return x, mean, sd


def test_each_images_best_scale_beats_a_scan(images) -> None:
    x, mean, sd = images
    best = np.sqrt(sd_calibration.per_image_z2(x, mean, sd))
    at_best = metrics.diag_gaussian_loglik(x, mean, sd * best[:, None, None, None])
    for t in np.linspace(0.2, 4.0, 400):
        assert np.all(at_best >= metrics.diag_gaussian_loglik(x, mean, t * sd) - 1e-9)


def test_each_images_best_contrast_and_scale_beats_a_scan_and_the_scale_alone(images) -> None:
    x, mean, sd = images
    best = sd_calibration.best_contrast_loglik(x, mean, sd)
    scale_only = np.sqrt(sd_calibration.per_image_z2(x, mean, sd))[:, None, None, None]
    assert np.all(best >= metrics.diag_gaussian_loglik(x, mean, sd * scale_only) - 1e-9)  # c = 1
    centre = np.log(sd).mean(axis=(1, 2, 3), keepdims=True)
    for c in sd_calibration.CONTRASTS:
        for t in np.linspace(0.2, 4.0, 60):
            shaped = t * np.exp(centre + c * (np.log(sd) - centre))
            assert np.all(best >= metrics.diag_gaussian_loglik(x, mean, shaped) - 1e-9)
    flat = np.sqrt(((x - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True))  # c = 0: one sd
    np.testing.assert_array_less(metrics.diag_gaussian_loglik(x, mean, flat + 0 * sd) - 1e-9,
                                 best + 1e-9)


def test_held_out_r2_is_one_for_a_linear_target_and_near_zero_for_noise() -> None:
    rng = np.random.default_rng(5)
    features = rng.standard_normal((400, 3))
    assert sd_calibration.held_out_r2(features, features @ [1.0, -2.0, 0.5] + 3) == (
        pytest.approx(1.0))
    assert abs(sd_calibration.held_out_r2(features, rng.standard_normal(400))) < 0.05
