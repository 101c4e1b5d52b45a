"""SquareLoss: weight / N * sum((pred - label)^2) / 2; backward against finite differences in
float64, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_square_loss_forward_and_gradients(weight, rng, backend) -> None:
    n = 4
    pred, label = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    config = make_config("SquareLoss", name="sq", bottoms=["pred", "label"], weight=weight)
    harness = LayerHarness(config, {"pred": pred, "label": label}, backend=backend)
    assert harness.objective() == pytest.approx(
        weight / n * 0.5 * float(((pred - label) ** 2).sum()), rel=1e-13)
    grads = harness.gradients()
    np.testing.assert_allclose(grads["pred"], weight / n * (pred - label), rtol=1e-13)
    np.testing.assert_allclose(grads["label"], weight / n * (label - pred), rtol=1e-13)
    harness.check_gradients()


def test_square_loss_rejects_mismatched_shapes() -> None:
    config = make_config("SquareLoss", name="loss", bottoms=["a", "b"])
    with pytest.raises(ConfigError, match="'loss'.*'b'"):
        LayerHarness(config, {"a": np.ones((2, 3)), "b": np.ones((2, 4))})
