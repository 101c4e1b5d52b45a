"""experiments/sd_calibration.py: best per-image sd scale, held-out R^2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from galaxy_model import metrics

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "sd_calibration.py"
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


def test_held_out_r2_is_one_for_a_linear_target_and_near_zero_for_noise() -> None:
    rng = np.random.default_rng(5)
    features = rng.standard_normal((400, 3))
    assert sd_calibration.held_out_r2(features, features @ [1.0, -2.0, 0.5] + 3) == (
        pytest.approx(1.0))
    assert abs(sd_calibration.held_out_r2(features, rng.standard_normal(400))) < 0.05
