"""experiments/sd_contrast.py: the per-image effective contrast of a contrast head."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "sd_contrast.py"
spec = importlib.util.spec_from_file_location("sd_contrast", SCRIPT)
sd_contrast = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sd_contrast)


def test_the_effective_contrast_is_the_heads_one_plus_a_whatever_its_level() -> None:
    rng = np.random.default_rng(11)
    log_sd = rng.normal(-3.0, 0.6, size=(6, 1, 7, 7))
    a, b = rng.uniform(-0.8, 0.8, size=6), rng.uniform(-1, 1, size=6)
    centre = log_sd.mean(axis=(1, 2, 3), keepdims=True)
    shaped = centre + (1 + a)[:, None, None, None] * (log_sd - centre) + b[:, None, None, None]
    before = sd_contrast.SD_FLOOR + np.exp(log_sd)
    after = sd_contrast.SD_FLOOR + np.exp(shaped)
    np.testing.assert_allclose(sd_contrast.effective_contrast(before, after), 1 + a, rtol=1e-9)
    np.testing.assert_allclose(sd_contrast.effective_contrast(before, before), 1.0, rtol=1e-12)
