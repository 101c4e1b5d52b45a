"""RandomNormal: standard normal draws, seeded per layer and resumable, on every backend."""

from __future__ import annotations

import numpy as np
from scipy.stats import kstest

from tests.helpers import LayerHarness, batches, make_config


def test_random_normal_draws_standard_normals(backend) -> None:
    config = make_config("RandomNormal", name="eps", tops=["eps"], output_dims=[4, 5])
    layer = LayerHarness(config, {}, batch_size=50, backend=backend).layer
    assert layer.tops[0].shape == (50, 4, 5)
    draws = np.concatenate([b[0].ravel() for b in batches(layer, 20)])
    assert kstest(draws, "norm").pvalue > 1e-3
    assert abs(draws.mean()) < 0.02 and abs(draws.std() - 1) < 0.02


def test_random_normal_is_seeded_per_layer_and_resumable(backend) -> None:
    def layer(name: str, seed: int):
        config = make_config("RandomNormal", name=name, tops=["eps"], output_dims=[3],
                             batch_size=4)
        return LayerHarness(config, {}, seed=seed, batch_size=99, backend=backend).layer

    a, b = layer("eps", 1), layer("eps", 1)
    assert a.tops[0].shape == (4, 3)  # its own batch_size wins over the net's
    np.testing.assert_array_equal(batches(a, 3)[2][0], batches(b, 3)[2][0])
    assert not np.array_equal(batches(layer("eps", 2), 1)[0][0], batches(layer("eps", 1), 1)[0][0])
    assert not np.array_equal(batches(layer("noise", 1), 1)[0][0],
                              batches(layer("eps", 1), 1)[0][0])
    state = {k: np.copy(v) for k, v in a.state_dict().items()}
    expected = batches(a, 2)
    c = layer("eps", 1)  # a resume: the same layer and seed, fresh, then the saved position
    c.load_state_dict(state)
    for got, want in zip(batches(c, 2), expected, strict=True):
        np.testing.assert_array_equal(got[0], want[0])
