"""Split: its tops alias its bottom; its bottom's gradient is the sum of the tops', checked
against finite differences in float64, on every backend."""

from __future__ import annotations

import numpy as np

from tests.helpers import LayerHarness, make_config


def test_split_aliases_its_bottom_and_sums_gradients(rng, backend) -> None:
    x = rng.normal(size=(3, 4))
    config = make_config("Split", name="split", bottoms=["x"], tops=["x1", "x2", "x3"])
    harness = LayerHarness(config, {"x": x}, backend=backend)
    harness.layer.forward()
    for top in harness.layer.tops:
        np.testing.assert_array_equal(harness.host(top.data), x)
    grads = harness.gradients()
    upstream = sum(harness.host(g) for g in harness.upstream.values())
    np.testing.assert_allclose(grads["x"], upstream, rtol=1e-15)
    harness.check_gradients()
