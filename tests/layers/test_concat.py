"""Concat: joins along its axis; backward splits the gradient, checked against finite differences
in float64, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config


def test_concat_joins_along_its_axis_and_splits_gradients(rng, backend) -> None:
    parts = {"a": rng.normal(size=(3, 2, 4)), "b": rng.normal(size=(3, 5, 4))}
    config = make_config("Concat", name="cat", bottoms=["a", "b"], tops=["y"])
    harness = LayerHarness(config, parts, backend=backend)
    harness.layer.forward()
    np.testing.assert_array_equal(harness.top(),
                                  np.concatenate([parts["a"], parts["b"]], axis=1))
    harness.check_gradients()


def test_concat_rejects_bottoms_that_differ_off_its_axis() -> None:
    config = make_config("Concat", name="cat", bottoms=["a", "b"], tops=["y"])
    with pytest.raises(ConfigError, match="'cat'.*differ off axis 1"):
        LayerHarness(config, {"a": np.zeros((2, 3, 4)), "b": np.zeros((2, 3, 5))})


def test_concat_leaves_the_batch_axis_alone() -> None:
    with pytest.raises(ConfigError, match="'Concat'.*axis.*batch"):
        make_config("Concat", name="Concat", axis=0, bottoms=["a", "b"], tops=["c"])
