"""ContrastLevel: each row scaled about its mean, written out; backward against finite differences
in float64, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config


@pytest.mark.parametrize("neuron", ["Identity", {"type": "Exponential", "cap": 0.5}], ids=str)
def test_contrast_level_scales_each_row_about_its_mean(neuron, rng, backend) -> None:
    x, ab = rng.normal(size=(3, 2, 4)), rng.normal(scale=0.5, size=(3, 2))
    config = make_config("ContrastLevel", name="cl", bottoms=["x", "ab"], tops=["y"],
                         neuron=neuron)
    harness = LayerHarness(config, {"x": x, "ab": ab}, backend=backend)
    harness.layer.forward()
    for row, (a, b), got in zip(x.reshape(3, 8), ab, harness.top().reshape(3, 8),
                                strict=True):
        mean = sum(row) / len(row)
        expected = [mean + (1 + a) * (v - mean) + b for v in row]
        if neuron != "Identity":
            expected = [math.exp(min(u, 0.5)) for u in expected]
        np.testing.assert_allclose(got, expected, rtol=1e-13)
    harness.check_gradients()


def test_contrast_level_at_zero_is_the_identity_and_checks_its_head(rng, backend) -> None:
    x = rng.normal(size=(3, 5))
    config = make_config("ContrastLevel", name="cl", bottoms=["x", "ab"], tops=["y"])
    harness = LayerHarness(config, {"x": x, "ab": np.zeros((3, 2))}, backend=backend)
    harness.layer.forward()
    np.testing.assert_allclose(harness.top(), x, rtol=1e-15)
    with pytest.raises(ConfigError, match="'cl'.*'ab' must be \\(N, 2\\)"):
        LayerHarness(config, {"x": x, "ab": np.zeros((3, 3))}, backend=backend)
