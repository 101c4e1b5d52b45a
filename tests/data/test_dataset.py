"""The dataset file: round trip, normalisation undone, and one-line DataErrors for bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from galaxy_model.dataset import GalaxyDataset, read_dataset, write_dataset
from mochapy.errors import DataError


def small_dataset(count: int = 4, bands: int = 3, size: int = 9) -> GalaxyDataset:
    rng = np.random.default_rng(0)
    return GalaxyDataset(
        data=rng.normal(size=(count, bands, size, size)).astype(np.float32),
        ivar=rng.uniform(1, 2, (count, bands, size, size)).astype(np.float32),
        mask=(rng.uniform(size=(count, bands, size, size)) < 0.1).astype(np.uint8),
        scale=rng.uniform(1, 5, count).astype(np.float32),
        offset=rng.normal(size=(count, bands)).astype(np.float32),
        provenance=[f"galaxy_{i}.fits[1] é" for i in range(count)],
        attrs={"source": "test", "size": size, "bands": bands, "stamp_side_in_r50": 11.0},
    )


def test_round_trip_keeps_every_field(tmp_path) -> None:
    original = small_dataset()
    path = tmp_path / "sub" / "set.h5"
    write_dataset(path, original)
    back = read_dataset(path)
    for name in ("data", "ivar", "mask", "scale", "offset"):
        assert np.array_equal(getattr(back, name), getattr(original, name)), name
    assert back.data.dtype == np.float32 and back.data.shape == (4, 3, 9, 9)
    assert back.provenance == original.provenance
    assert back.attrs == original.attrs
    assert [p.name for p in path.parent.iterdir()] == ["set.h5"]  # no temporary left behind
    with h5py.File(path) as f:  # what mochapy's HDF5Data reads directly
        assert f["data"].dtype == np.float32 and f["data"].shape == (4, 3, 9, 9)


def test_limit_reads_the_first_rows(tmp_path) -> None:
    write_dataset(tmp_path / "set.h5", small_dataset())
    back = read_dataset(tmp_path / "set.h5", limit=2)
    assert len(back) == 2 and back.provenance == small_dataset().provenance[:2]


def test_denormalise_returns_raw_units() -> None:
    ds = small_dataset()
    raw = ds.data * ds.scale[:, None, None, None] + ds.offset[:, :, None, None]
    assert np.allclose(ds.denormalise(1), raw[1])
    assert np.allclose(ds.denormalise(slice(0, 3)), raw[:3])


def test_a_file_with_only_data_reads_with_neutral_normalisation(tmp_path) -> None:
    with h5py.File(tmp_path / "bare.h5", "w") as f:
        f["data"] = np.ones((2, 1, 5, 5), np.float32)
    back = read_dataset(tmp_path / "bare.h5")
    assert np.array_equal(back.scale, [1, 1]) and np.array_equal(back.offset, [[0], [0]])
    assert back.ivar is None and back.mask is None and back.provenance[1] == "bare.h5 row 1"


def write_raw(path, **arrays) -> None:
    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            f[name] = value


def ivar_with(value: float) -> np.ndarray:
    """An ivar for two 3 x 3 one-band images, `value` at image 1, row 0, column 2."""
    ivar = np.ones((2, 1, 3, 3))
    ivar[1, 0, 0, 2] = value
    return ivar


def truncated(path) -> None:
    write_dataset(path, small_dataset(count=50, size=20))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such dataset file"),
        (lambda p: p.write_bytes(b"not an hdf5 file at all" * 10), "not a readable HDF5"),
        (truncated, "truncated or corrupt"),
        (lambda p: write_raw(p, images=np.ones((2, 1, 5, 5))), "no `data` dataset"),
        (lambda p: write_raw(p, data=np.ones((2, 5, 5))), r"shape \(N, C, S, S\)"),
        (lambda p: write_raw(p, data=np.ones((2, 2, 5, 5))), "C in {1, 3}"),
        (lambda p: write_raw(p, data=np.ones((2, 1, 5, 6))), r"got \(2, 1, 5, 6\)"),
        (lambda p: write_raw(p, data=np.ones((0, 1, 5, 5))), r"no images \(N = 0\)"),
        (lambda p: write_raw(p, data=np.array([[[[0, np.nan]] * 2]])), "NaN or Inf"),
        (lambda p: write_raw(p, data=np.ones((2, 1, 3, 3)), scale=np.ones(3)), "`scale`"),
        (lambda p: write_raw(p, data=np.ones((2, 1, 3, 3)), ivar=ivar_with(-1.0)),
         r"`ivar` holds negative, NaN or Inf values \(first at image 1, band 1, x=2, y=0: -1.0"),
        (lambda p: write_raw(p, data=np.ones((2, 1, 3, 3)), ivar=ivar_with(np.nan)),
         r"`ivar` holds negative, NaN or Inf values \(first at image 1, band 1, x=2, y=0: nan"),
        (lambda p: write_raw(p, data=np.ones((2, 1, 3, 3)), mask=np.zeros((2, 1, 2, 2))),
         r"`mask` has shape \(2, 1, 2, 2\)"),
    ],
    ids=["missing", "not-hdf5", "truncated", "no-data", "rank", "bands", "not-square", "empty",
         "nan", "scale-rows", "ivar-negative", "ivar-nan", "mask-shape"],
)
def test_bad_files_raise_one_line_data_errors(tmp_path, make, message) -> None:
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(DataError, match=message) as info:
        read_dataset(path)
    assert "\n" not in str(info.value) and "bad.h5" in str(info.value)


def test_write_refuses_non_finite_data(tmp_path) -> None:
    ds = small_dataset()
    ds.data[0, 0, 0, 0] = np.inf
    with pytest.raises(DataError, match="NaN or Inf"):
        write_dataset(tmp_path / "set.h5", ds)
    assert not list(tmp_path.iterdir())
