"""Snapshots: parameters, solver state, layer states and statistics in one HDF5 file.

Written atomically (temporary file, flush, fsync, rename) with a SHA-256 checksum over every
array, so a kill -9 mid-write leaves the previous snapshot intact and a damaged file is detected
and skipped on resume rather than trusted.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import warnings
from dataclasses import dataclass

import h5py
import numpy as np

from mochapy.atomic import read_hdf5_arrays, write_hdf5_atomically
from mochapy.errors import DataError

SNAPSHOT_PATTERN = re.compile(r"snapshot-(\d{9})\.h5$")
GROUPS = ("params", "solver", "layers", "statistics")


@dataclass
class Snapshot:
    iteration: int
    params: dict[str, np.ndarray]
    solver: dict[str, np.ndarray]
    layers: dict[str, dict[str, np.ndarray]]
    statistics: dict[str, np.ndarray]


def snapshot_path(folder: str, iteration: int) -> str:
    return os.path.join(folder, f"snapshot-{iteration:09d}.h5")


def _flatten(snapshot: Snapshot) -> dict[str, np.ndarray]:
    items = {f"params/{k}": v for k, v in snapshot.params.items()}
    items.update({f"solver/{k}": v for k, v in snapshot.solver.items()})
    for layer, state in snapshot.layers.items():
        items.update({f"layers/{layer}/{k}": v for k, v in state.items()})
    items.update({f"statistics/{k}": v for k, v in snapshot.statistics.items()})
    return items


def _checksum(items: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(items):
        value = np.ascontiguousarray(items[key])
        digest.update(key.encode())
        digest.update(str(value.dtype).encode() + str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def write_snapshot(path: str, snapshot: Snapshot) -> None:
    items = _flatten(snapshot)
    write_hdf5_atomically(
        path, items, {"iteration": snapshot.iteration, "sha256": _checksum(items), "format": 1}
    )


def read_snapshot(path: str) -> Snapshot:
    """Read and verify a snapshot; DataError if it is unreadable or its checksum is wrong."""
    try:
        with h5py.File(path, "r") as handle:
            items = read_hdf5_arrays(handle)
            iteration = int(handle.attrs["iteration"])
            expected = str(handle.attrs["sha256"])
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise DataError(f"snapshot {path} is unreadable: {' '.join(str(exc).split())}") from None
    if _checksum(items) != expected:
        raise DataError(f"snapshot {path} fails its checksum")
    snapshot = Snapshot(iteration, {}, {}, {}, {})
    for key, value in items.items():
        group, _, rest = key.partition("/")
        if group == "layers":
            layer, _, name = rest.rpartition("/")
            snapshot.layers.setdefault(layer, {})[name] = value
        elif group in GROUPS:
            getattr(snapshot, group)[rest] = value
    return snapshot


def list_snapshots(folder: str) -> list[str]:
    """Snapshot files in a folder, newest first."""
    paths = [p for p in glob.glob(os.path.join(folder, "snapshot-*.h5"))
             if SNAPSHOT_PATTERN.search(p)]
    return sorted(paths, reverse=True)


def newest_valid_snapshot(folder: str, damaged: list[str] | None = None) -> Snapshot | None:
    """The newest snapshot that passes its checksum; damaged ones are skipped with a warning,
    or, given a list, with what is wrong with each appended to it."""
    for path in list_snapshots(folder):
        try:
            return read_snapshot(path)
        except DataError as exc:
            if damaged is None:
                warnings.warn(f"{exc}; skipping it", stacklevel=2)
            else:
                damaged.append(str(exc))
    return None


def prune_snapshots(folder: str, keep: int) -> None:
    """Delete all but the newest `keep` snapshots."""
    for path in list_snapshots(folder)[keep:]:
        os.unlink(path)
