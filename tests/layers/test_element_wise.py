"""ElementWise: add, subtract, multiply, divide against NumPy; backward against finite
differences in float64, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config

ELEMENTWISE = {
    "Add": np.add, "Subtract": np.subtract, "Multiply": np.multiply, "Divide": np.divide,
}


@pytest.mark.parametrize("operation", ELEMENTWISE)
def test_element_wise_forward_and_gradients(operation, rng, backend) -> None:
    a = rng.normal(size=(3, 4))
    b = rng.uniform(0.5, 2.0, size=(3, 4)) * rng.choice([-1, 1], size=(3, 4))
    config = make_config("ElementWise", name="ew", bottoms=["a", "b"], tops=["y"],
                         operation=operation)
    harness = LayerHarness(config, {"a": a, "b": b}, backend=backend)
    harness.layer.forward()
    np.testing.assert_allclose(harness.top(), ELEMENTWISE[operation](a, b),
                               rtol=1e-15)
    harness.check_gradients()


def test_element_wise_rejects_unequal_shapes(rng) -> None:
    config = make_config("ElementWise", name="ew", bottoms=["a", "b"], tops=["y"])
    with pytest.raises(ConfigError, match="'ew'.*differ"):
        LayerHarness(config, {"a": np.zeros((2, 3)), "b": np.zeros((2, 4))})
