"""HDF5Data: Mocha source lists, single files, limits, shuffling, registered schemes and
one-line errors for bad sources, on every backend."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from mochapy import data_sources
from mochapy.data_sources import register_source_scheme
from mochapy.errors import DataError
from tests.helpers import batches, source_layer


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


def test_hdf5_data_reads_a_source_list_in_order_and_wraps(two_files: Path, backend) -> None:
    layer = hdf5_layer("parts/train.txt", two_files.parents[1], 4, backend=backend)
    assert layer.n_rows == 10
    assert layer.tops[0].shape == (4, 2, 3) and layer.tops[0].data.dtype == np.float64
    rows = [b[1][:, 0].tolist() for b in batches(layer, 4)]
    assert rows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5]]
    assert layer.epoch == 1


def test_hdf5_data_shuffles_per_epoch_keeping_tops_aligned(two_files: Path, backend) -> None:
    layer = hdf5_layer(str(two_files), Path("/nonexistent"), 5, shuffle=True, backend=backend)
    served = batches(layer, 6)
    epochs = [np.concatenate([b[1][:, 0] for b in served[i:i + 2]]) for i in (0, 2, 4)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(10))
    assert len({tuple(e) for e in epochs}) == 3
    for bx, by in served:
        np.testing.assert_array_equal(bx[:, 0, 0], by[:, 0])


def test_hdf5_data_takes_a_single_file_and_a_limit(two_files: Path, backend) -> None:
    single = hdf5_layer("a.h5", two_files.parent, 2, backend=backend)
    assert single.n_rows == 6
    limited = hdf5_layer("train.txt", two_files.parent, 2, limit=7, backend=backend)
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
