"""Slice: cuts at its points; backward against finite differences in float64, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config


def test_slice_cuts_at_its_points_and_an_unread_top_takes_no_gradient(rng, backend) -> None:
    x = rng.normal(size=(4, 9))
    config = make_config("Slice", name="cut", bottoms=["x"], tops=["a", "b", "c"],
                         slice_point=[2, 7])
    harness = LayerHarness(config, {"x": x}, backend=backend)
    harness.layer.forward()
    for top, (lo, hi) in zip(harness.layer.tops, [(0, 2), (2, 7), (7, 9)], strict=True):
        np.testing.assert_array_equal(harness.host(top.data), [row[lo:hi] for row in x.tolist()])
    harness.check_gradients()


@pytest.mark.parametrize("points", [[9], [3, 3], [0, 4], [4, 6, 8]])
def test_slice_rejects_points_that_do_not_cut(points) -> None:
    with pytest.raises(ConfigError, match="'cut'.*slice_point"):
        config = make_config("Slice", name="cut", bottoms=["x"], tops=["a", "b", "c"],
                             slice_point=points)
        LayerHarness(config, {"x": np.zeros((2, 9))})


def test_slice_leaves_the_batch_axis_alone() -> None:
    with pytest.raises(ConfigError, match="'Slice'.*axis.*batch"):
        make_config("Slice", name="Slice", axis=0, bottoms=["a"], tops=["c", "d"],
                    slice_point=[1])
