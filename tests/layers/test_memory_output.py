"""MemoryOutput: collects every batch of its bottom, on every backend."""

from __future__ import annotations

import numpy as np

from tests.helpers import feed, make_config


def test_memory_output_collects_every_batch(rng, backend) -> None:
    values = [rng.normal(size=(3, 2)) for _ in range(4)]
    layer = feed(make_config("MemoryOutput", name="out", bottoms=["v"]), values, backend=backend)
    np.testing.assert_array_equal(layer.collected()["v"], np.concatenate(values))
    layer.reset()
    assert layer.collected() == {}
