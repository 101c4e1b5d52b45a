"""Power: (scale x + shift)^power written out; backward against finite differences in float64,
on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import LayerHarness, make_config


@pytest.mark.parametrize(("power", "scale", "shift"),
                         [(2.0, 0.5, 1.0), (0.5, 2.0, 3.0), (-1.0, 1.0, 4.0), (3.0, -1.5, 0.0)])
def test_power_forward_and_gradients(power, scale, shift, rng, backend) -> None:
    x = rng.uniform(-1, 1, size=(3, 5))
    config = make_config("Power", name="pow", bottoms=["x"], tops=["y"], power=power,
                         scale=scale, shift=shift)
    harness = LayerHarness(config, {"x": x}, backend=backend)
    harness.layer.forward()
    expected = [[(scale * v + shift) ** power for v in row] for row in x.tolist()]
    np.testing.assert_allclose(harness.top(), expected, rtol=1e-13)
    harness.check_gradients()
