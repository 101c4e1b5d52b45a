"""Streaming reads (mochapy.streaming, HDF5Data on a sharded directory): file order without
shuffling, every row once per shuffled epoch, the same stream for the same seed, bit-identical
resumption from a snapshot mid-epoch, at most two windows in memory, and a training run resumed
from a snapshot that ends with the very weights of an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mochapy.errors import DataError
from mochapy.sharded import write_manifest
from mochapy.streaming import StreamingBatches, plan_chunks
from tests.helpers import LayerHarness, make_config

ROWS = 23  # over three shards of 10, 10 and 3 rows


def write_shards(folder: Path, sizes: tuple[int, ...] = (10, 10, 3), first: int = 0) -> Path:
    """A sharded directory whose row i holds x = i (shape (2,)) and y = i (shape (1,))."""
    folder.mkdir(parents=True, exist_ok=True)
    names, start = [], first
    for index, size in enumerate(sizes):
        rows = np.arange(start, start + size, dtype=np.float32)
        name = f"shard-{index:05d}.h5"
        with h5py.File(folder / name, "w") as handle:
            handle["x"] = np.stack([rows, -rows], axis=1)
            handle["y"] = rows[:, None]
        names.append(name)
        start += size
    write_manifest(str(folder), names, {"what": "row numbers"})
    return folder


def stream(folder: Path, batch: int = 4, shuffle: bool = True, seed: int = 0,
           chunk_rows: int = 4, window_chunks: int = 2) -> StreamingBatches:
    files = [(str(folder / f"shard-{i:05d}.h5"), n) for i, n in enumerate((10, 10, 3))]
    return StreamingBatches(plan_chunks(files, chunk_rows), ["x", "y"], batch, shuffle,
                            np.random.default_rng(seed), window_chunks, np.dtype(np.float64),
                            "test")


def take(batches: StreamingBatches, count: int) -> list[np.ndarray]:
    """`count` batches of y as flat row numbers (x is checked to stay aligned with y)."""
    out = []
    for _ in range(count):
        hosts = [np.empty((batches.batch_size, 2)), np.empty((batches.batch_size, 1))]
        batches.fill(hosts)
        np.testing.assert_array_equal(hosts[0][:, 0], hosts[1][:, 0])
        np.testing.assert_array_equal(hosts[0][:, 1], -hosts[1][:, 0])
        out.append(hosts[1][:, 0].copy())
    return out


def test_chunks_never_span_two_files_and_honour_a_limit() -> None:
    chunks = plan_chunks([("a", 10), ("b", 3)], 4)
    assert [(c.path, c.start, c.stop) for c in chunks] == [
        ("a", 0, 4), ("a", 4, 8), ("a", 8, 10), ("b", 0, 3)]
    limited = plan_chunks([("a", 10), ("b", 3)], 4, limit=11)
    assert sum(c.rows for c in limited) == 11 and limited[-1].path == "b"


def test_unshuffled_stream_is_file_order_wrapping_epochs(tmp_path: Path) -> None:
    served = np.concatenate(take(stream(write_shards(tmp_path / "d"), shuffle=False), 12))
    np.testing.assert_array_equal(served, np.arange(48) % ROWS)


def test_shuffled_epochs_visit_every_row_once_and_differ(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "d")
    served = np.concatenate(take(stream(folder, batch=ROWS), 3))
    epochs = served.reshape(3, ROWS)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(ROWS))
    assert len({tuple(e) for e in epochs}) == 3
    again = np.concatenate(take(stream(folder, batch=ROWS), 3))
    other = np.concatenate(take(stream(folder, batch=ROWS, seed=1), 3))
    np.testing.assert_array_equal(served, again)
    assert not np.array_equal(served, other)


def test_snapshot_state_resumes_bit_identically_mid_window(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "d")
    original = stream(folder, batch=5)
    take(original, 7)  # into the second epoch, mid-window
    state = {key: np.copy(value) for key, value in original.state_dict().items()}
    expected = take(original, 9)
    resumed = stream(folder, batch=5, seed=99)  # its own seed is replaced by the snapshot's
    resumed.load_state_dict(state)
    for want, got in zip(expected, take(resumed, 9), strict=True):
        np.testing.assert_array_equal(want, got)


def test_at_most_two_windows_are_held(tmp_path: Path) -> None:
    batches = stream(write_shards(tmp_path / "d"), batch=3)
    for _ in range(20):
        take(batches, 1)
        assert len(batches._windows) == 1 and len(batches._pending) <= 1
        held = sum(a.shape[0] for window in batches._windows.values() for a in window[:1])
        assert held <= batches.window_chunks * 4  # window_chunks chunks of chunk_rows rows


def test_a_shard_with_nan_is_named(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "d")
    with h5py.File(folder / "shard-00001.h5", "r+") as handle:
        handle["x"][3, 0] = np.nan
    with pytest.raises(DataError, match="shard-00001.h5:x holds NaN"):
        take(stream(folder, shuffle=False, batch=ROWS), 1)


def test_hdf5_data_streams_a_sharded_directory(tmp_path: Path) -> None:
    write_shards(tmp_path / "d")
    config = make_config("HDF5Data", name="data", batch_size=5, source="d",
                         base_dir=str(tmp_path), tops=["x", "y"], chunk_rows=4,
                         window_chunks=2)
    layer = LayerHarness(config, {}, batch_size=5).layer
    assert layer.stream is not None and layer.n_rows == ROWS
    assert layer.tops[0].shape == (5, 2)
    rows = []
    for _ in range(ROWS):
        layer.forward()
        rows.append(layer.tops[1].data[:, 0].copy())
    epochs = np.concatenate(rows).reshape(5, ROWS)
    assert all(sorted(epoch.tolist()) == list(range(ROWS)) for epoch in epochs)
    assert layer.epoch == 5


def test_hdf5_data_names_a_missing_shard(tmp_path: Path) -> None:
    folder = write_shards(tmp_path / "d")
    os.unlink(folder / "shard-00002.h5")
    config = make_config("HDF5Data", name="data", batch_size=5, source=str(folder),
                         tops=["x", "y"])
    with pytest.raises(DataError, match="shard-00002.h5: shard listed in manifest.json is "
                                        "missing"):
        LayerHarness(config, {}, batch_size=5)


SCRIPT = Path(sys.executable).with_name("mochapy")


def test_training_from_shards_resumes_to_the_same_weights(tiny_example: Path) -> None:
    folder = tiny_example.parent
    with h5py.File(folder / "data" / "tiny_train.h5", "r") as handle:
        x, y = handle["x"][()], handle["y"][()]
    shards = folder / "data" / "sharded"
    shards.mkdir()
    bounds = [0, len(x) // 3, 2 * len(x) // 3, len(x)]
    for index, (start, stop) in enumerate(zip(bounds, bounds[1:], strict=False)):
        with h5py.File(shards / f"shard-{index:05d}.h5", "w") as handle:
            handle["x"], handle["y"] = x[start:stop], y[start:stop]
    write_manifest(str(shards), [f"shard-{i:05d}.h5" for i in range(3)], {})
    net = yaml.safe_load(tiny_example.read_text())
    net["layers"][0].update(source="data/sharded", chunk_rows=40, window_chunks=2)
    tiny_example.write_text(yaml.safe_dump(net))

    def run(*args: object) -> None:
        result = subprocess.run([str(SCRIPT), "run", str(tiny_example), "--quiet", *map(str, args)],
                                cwd=folder, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    run("--out", "straight", "--max-iter", 400)
    run("--out", "resumed", "--max-iter", 200)
    run("--out", "resumed", "--max-iter", 400, "--resume")
    with (h5py.File(folder / "straight" / "weights.h5", "r") as a,
          h5py.File(folder / "resumed" / "weights.h5", "r") as b):
        for name in a["params"]:
            np.testing.assert_array_equal(a["params"][name][()], b["params"][name][()])
