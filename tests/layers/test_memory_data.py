"""MemoryData: batch order, per-epoch shuffling with aligned tops, wrap-around, resumable state
and one-line errors, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from mochapy.errors import DataError
from tests.helpers import batches, source_layer


def test_memory_data_serves_batches_in_order_and_wraps_around(backend) -> None:
    x = np.arange(5, dtype=float)[:, None] * np.ones((1, 2))
    y = np.arange(5, dtype=float)[:, None]
    layer = source_layer("MemoryData", 3, {"data": {"x": x, "y": y}}, tops=["x", "y"],
                         backend=backend)
    rows = [b[1][:, 0].tolist() for b in batches(layer, 4)]
    assert rows == [[0, 1, 2], [3, 4, 0], [1, 2, 3], [4, 0, 1]]
    assert layer.order.epoch == 2


def test_memory_data_shuffles_each_epoch_and_keeps_tops_aligned(backend) -> None:
    n = 12
    x = np.arange(n, dtype=float)[:, None] * np.array([[1.0, -1.0]])
    y = np.arange(n, dtype=float)[:, None]
    layer = source_layer("MemoryData", 4, {"data": {"x": x, "y": y}}, tops=["x", "y"],
                         shuffle=True, backend=backend)
    served = batches(layer, 9)  # three epochs
    epochs = [np.concatenate([b[1][:, 0] for b in served[i:i + 3]]) for i in (0, 3, 6)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[0], np.arange(n))
    for bx, by in served:
        np.testing.assert_array_equal(bx[:, 0], by[:, 0])
        np.testing.assert_array_equal(bx[:, 1], -by[:, 0])


def test_memory_data_state_resumes_the_same_batches(backend) -> None:
    data = {"data": {"x": np.arange(7, dtype=float)[:, None]}}
    first = source_layer("MemoryData", 3, data, tops=["x"], shuffle=True, backend=backend)
    batches(first, 4)
    state = {k: np.copy(v) for k, v in first.state_dict().items()}
    expected = batches(first, 5)
    second = source_layer("MemoryData", 3, data, tops=["x"], shuffle=True, backend=backend)
    second.load_state_dict(state)
    for got, want in zip(batches(second, 5), expected, strict=True):
        np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [({}, "no array given for top 'x'"),
     ({"x": np.ones((3, 2)), "y": np.ones((4, 1))}, "differ in length"),
     ({"x": np.array([[1.0], [np.nan]]), "y": np.ones((2, 1))}, "not finite"),
     ({"x": np.ones((0, 2)), "y": np.ones((0, 1))}, "empty")],
)
def test_memory_data_rejects_bad_arrays(arrays, message) -> None:
    with pytest.raises(DataError, match=message):
        source_layer("MemoryData", 2, {"data": arrays}, tops=["x", "y"])


def test_memory_data_without_arrays_says_how_to_pass_them() -> None:
    with pytest.raises(DataError, match="memory_data"):
        source_layer("MemoryData", 2, None, tops=["x"])
