"""Source and sink layers: MemoryData, HDF5Data (Mocha source lists), RandomNormal, MemoryOutput,
HDF5Output: batch order, shuffling, wrap-around, resumable state, atomic output files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.stats import kstest

from mochapy import data_sources
from mochapy.data_sources import register_source_scheme
from mochapy.errors import DataError
from tests.helpers import LayerHarness, make_config


def source_layer(type_name: str, batch_size: int, memory_data=None, **fields):
    config = make_config(type_name, name="data", batch_size=batch_size, **fields)
    return LayerHarness(config, {}, batch_size=batch_size, memory_data=memory_data).layer


def batches(layer, count: int) -> list[list[np.ndarray]]:
    out = []
    for _ in range(count):
        layer.forward()
        out.append([top.data.copy() for top in layer.tops])
    return out


# -- MemoryData -------------------------------------------------------------------------------
def test_memory_data_serves_batches_in_order_and_wraps_around() -> None:
    x = np.arange(5, dtype=float)[:, None] * np.ones((1, 2))
    y = np.arange(5, dtype=float)[:, None]
    layer = source_layer("MemoryData", 3, {"data": {"x": x, "y": y}}, tops=["x", "y"])
    rows = [b[1][:, 0].tolist() for b in batches(layer, 4)]
    assert rows == [[0, 1, 2], [3, 4, 0], [1, 2, 3], [4, 0, 1]]
    assert layer.order.epoch == 2


def test_memory_data_shuffles_each_epoch_and_keeps_tops_aligned() -> None:
    n = 12
    x = np.arange(n, dtype=float)[:, None] * np.array([[1.0, -1.0]])
    y = np.arange(n, dtype=float)[:, None]
    layer = source_layer("MemoryData", 4, {"data": {"x": x, "y": y}}, tops=["x", "y"],
                         shuffle=True)
    served = batches(layer, 9)  # three epochs
    epochs = [np.concatenate([b[1][:, 0] for b in served[i:i + 3]]) for i in (0, 3, 6)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[0], np.arange(n))
    for bx, by in served:
        np.testing.assert_array_equal(bx[:, 0], by[:, 0])
        np.testing.assert_array_equal(bx[:, 1], -by[:, 0])


def test_memory_data_state_resumes_the_same_batches() -> None:
    data = {"data": {"x": np.arange(7, dtype=float)[:, None]}}
    first = source_layer("MemoryData", 3, data, tops=["x"], shuffle=True)
    batches(first, 4)
    state = {k: np.copy(v) for k, v in first.state_dict().items()}
    expected = batches(first, 5)
    second = source_layer("MemoryData", 3, data, tops=["x"], shuffle=True)
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


# -- HDF5Data ---------------------------------------------------------------------------------
def write_h5(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as handle:
        for name, value in datasets.items():
            handle.create_dataset(name, data=value)
    return path


@pytest.fixture
def two_files(tmp_path: Path) -> Path:
    """A Mocha source list naming two HDF5 files (relative paths, a comment, a blank line)."""
    (tmp_path / "parts").mkdir()
    x = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    y = np.arange(10, dtype=np.float64)[:, None]
    write_h5(tmp_path / "parts" / "a.h5", x=x[:6], y=y[:6])
    write_h5(tmp_path / "parts" / "b.h5", x=x[6:], y=y[6:])
    listing = tmp_path / "parts" / "train.txt"
    listing.write_text("# training files\na.h5\n\n  b.h5  \n")
    return listing


def hdf5_layer(source: str, base_dir: Path, batch_size: int, **fields):
    return source_layer("HDF5Data", batch_size, source=source, base_dir=str(base_dir),
                        tops=fields.pop("tops", ["x", "y"]), **fields)


def test_hdf5_data_reads_a_source_list_in_order_and_wraps(two_files: Path) -> None:
    layer = hdf5_layer("parts/train.txt", two_files.parents[1], 4)
    assert layer.n_rows == 10
    assert layer.tops[0].shape == (4, 2, 3) and layer.tops[0].data.dtype == np.float64
    rows = [b[1][:, 0].tolist() for b in batches(layer, 4)]
    assert rows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5]]
    assert layer.epoch == 1


def test_hdf5_data_shuffles_per_epoch_keeping_tops_aligned(two_files: Path) -> None:
    layer = hdf5_layer(str(two_files), Path("/nonexistent"), 5, shuffle=True)
    served = batches(layer, 6)
    epochs = [np.concatenate([b[1][:, 0] for b in served[i:i + 2]]) for i in (0, 2, 4)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(10))
    assert len({tuple(e) for e in epochs}) == 3
    for bx, by in served:
        np.testing.assert_array_equal(bx[:, 0, 0], by[:, 0])


def test_hdf5_data_takes_a_single_file_and_a_limit(two_files: Path) -> None:
    single = hdf5_layer("a.h5", two_files.parent, 2)
    assert single.n_rows == 6
    limited = hdf5_layer("train.txt", two_files.parent, 2, limit=7)
    assert limited.n_rows == 7
    assert [b[1][:, 0].tolist() for b in batches(limited, 4)] == [[0, 1], [2, 3], [4, 5], [6, 0]]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: "missing.h5", "not found"),
        (lambda d: write_h5(d / "f.h5", x=np.ones((3, 2))).name, "has no dataset 'y'"),
        (lambda d: write_h5(d / "f.h5", x=np.ones((3, 2)), y=np.ones((4, 1))).name,
         "different row counts"),
        (lambda d: write_h5(d / "f.h5", x=np.array([[1.0], [np.inf]]), y=np.ones((2, 1))).name,
         "NaN or Inf .first in row 1"),
        (lambda d: write_h5(d / "f.h5", x=np.zeros((0, 2)), y=np.ones((0, 1))).name, "empty"),
        (lambda d: (d / "list.txt").write_text("# nothing\n\n") and "list.txt", "names no HDF5"),
        (lambda d: (d / "list.txt").write_text("gone.h5\n") and "list.txt", "gone.h5"),
        (lambda d: (d / "blob.bin").write_bytes(b"\xff\xfe\x00\x81" * 8) and "blob.bin",
         "neither an HDF5 file"),
        (lambda d: (d / "fake.h5").write_text("not hdf5") and "fake.h5", "cannot read"),
        (lambda d: "nosuchscheme:train", "unknown data source scheme 'nosuchscheme'"),
    ],
    ids=["missing", "no-dataset", "row-counts", "non-finite", "empty", "empty-list",
         "listed-missing", "binary-list", "not-hdf5", "scheme"],
)
def test_hdf5_data_reports_bad_sources_in_one_line(setup, message, tmp_path) -> None:
    source = setup(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        hdf5_layer(source, tmp_path, 2)
    assert "'data'" in str(info.value) and "\n" not in str(info.value)


def test_hdf5_data_resolves_a_registered_scheme(tmp_path, monkeypatch) -> None:
    """How galaxy_model plugs `builtin:` in without mochapy importing it."""
    monkeypatch.setattr(data_sources, "_SCHEMES", dict(data_sources._SCHEMES))
    path = write_h5(tmp_path / "made.h5", x=np.ones((3, 2)), y=np.zeros((3, 1)))
    asked = []
    register_source_scheme("enginetest", lambda spec: asked.append(spec) or str(path))
    layer = hdf5_layer("enginetest:train", Path("/nonexistent"), 2)
    assert asked == ["enginetest:train"] and layer.n_rows == 3


def test_hdf5_data_rejects_files_whose_rows_differ_in_shape(tmp_path) -> None:
    write_h5(tmp_path / "a.h5", x=np.ones((2, 3)), y=np.ones((2, 1)))
    write_h5(tmp_path / "b.h5", x=np.ones((2, 4)), y=np.ones((2, 1)))
    (tmp_path / "list.txt").write_text("a.h5\nb.h5\n")
    with pytest.raises(DataError, match="b.h5:x rows have shape"):
        hdf5_layer("list.txt", tmp_path, 2)


# -- RandomNormal -----------------------------------------------------------------------------
def test_random_normal_draws_standard_normals() -> None:
    config = make_config("RandomNormal", name="eps", tops=["eps"], output_dims=[4, 5])
    layer = LayerHarness(config, {}, batch_size=50).layer
    assert layer.tops[0].shape == (50, 4, 5)
    draws = np.concatenate([b[0].ravel() for b in batches(layer, 20)])
    assert kstest(draws, "norm").pvalue > 1e-3
    assert abs(draws.mean()) < 0.02 and abs(draws.std() - 1) < 0.02


def test_random_normal_is_seeded_per_layer_and_resumable() -> None:
    def layer(name: str, seed: int):
        config = make_config("RandomNormal", name=name, tops=["eps"], output_dims=[3],
                             batch_size=4)
        return LayerHarness(config, {}, seed=seed, batch_size=99).layer

    a, b = layer("eps", 1), layer("eps", 1)
    assert a.tops[0].shape == (4, 3)  # its own batch_size wins over the net's
    np.testing.assert_array_equal(batches(a, 3)[2][0], batches(b, 3)[2][0])
    assert not np.array_equal(batches(layer("eps", 2), 1)[0][0], batches(layer("eps", 1), 1)[0][0])
    assert not np.array_equal(batches(layer("noise", 1), 1)[0][0],
                              batches(layer("eps", 1), 1)[0][0])
    state = {k: np.copy(v) for k, v in a.state_dict().items()}
    expected = batches(a, 2)
    c = layer("eps", 7)
    c.load_state_dict(state)
    for got, want in zip(batches(c, 2), expected, strict=True):
        np.testing.assert_array_equal(got[0], want[0])


# -- MemoryOutput and HDF5Output ----------------------------------------------------------------
def feed(config, values: list[np.ndarray]):
    """Set up a sink on blob 'v' and forward each batch of values through it."""
    harness = LayerHarness(config, {"v": values[0]}, grad_bottoms=())
    for value in values:
        harness.bottoms["v"].data[...] = value
        harness.layer.forward()
    return harness.layer


def test_memory_output_collects_every_batch(rng) -> None:
    values = [rng.normal(size=(3, 2)) for _ in range(4)]
    layer = feed(make_config("MemoryOutput", name="out", bottoms=["v"]), values)
    np.testing.assert_array_equal(layer.collected()["v"], np.concatenate(values))
    layer.reset()
    assert layer.collected() == {}


def test_hdf5_output_appears_only_when_finished(tmp_path, rng) -> None:
    target = tmp_path / "out.h5"
    values = [rng.normal(size=(3, 2)) for _ in range(3)]
    config = make_config("HDF5Output", name="out", bottoms=["v"], filename=str(target))
    layer = feed(config, values)
    assert not target.exists()
    layer.close()
    with h5py.File(target, "r") as handle:
        np.testing.assert_array_equal(handle["v"][()], np.concatenate(values))
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]
    layer.close()  # a second close is harmless


def test_hdf5_output_refuses_to_overwrite_unless_told(tmp_path, rng) -> None:
    target = tmp_path / "out.h5"
    target.write_bytes(b"keep me")
    config = make_config("HDF5Output", name="out", bottoms=["v"], filename=str(target))
    with pytest.raises(DataError, match="exists"):
        feed(config, [np.ones((2, 2))])
    assert target.read_bytes() == b"keep me"
    forced = make_config("HDF5Output", name="out", bottoms=["v"], filename=str(target),
                         force_overwrite=True)
    layer = feed(forced, [np.ones((2, 2))])
    assert target.read_bytes() == b"keep me"
    layer.close()
    with h5py.File(target, "r") as handle:
        assert handle["v"].shape == (2, 2)


def test_hdf5_output_discard_leaves_nothing(tmp_path) -> None:
    config = make_config("HDF5Output", name="out", bottoms=["v"],
                         filename=str(tmp_path / "out.h5"))
    layer = feed(config, [np.ones((2, 2))])
    layer.discard()
    assert list(tmp_path.iterdir()) == []
