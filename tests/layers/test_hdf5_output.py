"""HDF5Output: the file appears whole when the run finishes, never over an existing file unless
told, and discard leaves nothing; on every backend."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mochapy.errors import DataError
from tests.helpers import feed, make_config


def test_hdf5_output_appears_only_when_finished(tmp_path, rng, backend) -> None:
    target = tmp_path / "out.h5"
    values = [rng.normal(size=(3, 2)) for _ in range(3)]
    config = make_config("HDF5Output", name="out", bottoms=["v"], filename=str(target))
    layer = feed(config, values, backend=backend)
    assert not target.exists()
    layer.close()
    with h5py.File(target, "r") as handle:
        np.testing.assert_array_equal(handle["v"][()], np.concatenate(values))
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]
    layer.close()  # a second close is harmless


def test_hdf5_output_refuses_to_overwrite_unless_told(tmp_path, rng, backend) -> None:
    target = tmp_path / "out.h5"
    target.write_bytes(b"keep me")
    config = make_config("HDF5Output", name="out", bottoms=["v"], filename=str(target))
    with pytest.raises(DataError, match="exists"):
        feed(config, [np.ones((2, 2))], backend=backend)
    assert target.read_bytes() == b"keep me"
    forced = make_config("HDF5Output", name="out", bottoms=["v"], filename=str(target),
                         force_overwrite=True)
    layer = feed(forced, [np.ones((2, 2))], backend=backend)
    assert target.read_bytes() == b"keep me"
    layer.close()
    with h5py.File(target, "r") as handle:
        assert handle["v"].shape == (2, 2)


def test_hdf5_output_discard_leaves_nothing(tmp_path, backend) -> None:
    config = make_config("HDF5Output", name="out", bottoms=["v"],
                         filename=str(tmp_path / "out.h5"))
    layer = feed(config, [np.ones((2, 2))], backend=backend)
    layer.discard()
    assert list(tmp_path.iterdir()) == []
