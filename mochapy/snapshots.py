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
DAMAGED_SUFFIX = ".damaged"


@dataclass
class Snapshot:
    iteration: int
    params: dict[str, np.ndarray]
    solver: dict[str, np.ndarray]
    layers: dict[str, dict[str, np.ndarray]]
    statistics: dict[str, np.ndarray]
    # what training it continues: the net, solver and data as JSON (resume compares it); empty in
    # snapshots older than that check
    config: str = ""


# The snapshot of a run's lowest validation loss (`validation.keep_best`): beside snapshots/,
# so pruning never removes it and --resume never mistakes it for the newest.
BEST_SNAPSHOT = "best-snapshot.h5"


def snapshot_path(folder: str, iteration: int) -> str:
    return os.path.join(folder, f"snapshot-{iteration:09d}.h5")


def _flatten(snapshot: Snapshot) -> dict[str, np.ndarray]:
    items = {f"params/{k}": v for k, v in snapshot.params.items()}
    items.update({f"solver/{k}": v for k, v in snapshot.solver.items()})
    for layer, state in snapshot.layers.items():
        items.update({f"layers/{layer}/{k}": v for k, v in state.items()})
    items.update({f"statistics/{k}": v for k, v in snapshot.statistics.items()})
    return items


def _checksum(items: dict[str, np.ndarray], config: str = "") -> str:
    digest = hashlib.sha256()
    if config:  # older snapshots have none: their checksums stay what they were
        digest.update(config.encode())
    for key in sorted(items):
        value = np.ascontiguousarray(items[key])
        digest.update(key.encode())
        digest.update(str(value.dtype).encode() + str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def write_snapshot(path: str, snapshot: Snapshot) -> None:
    items = _flatten(snapshot)
    attrs = {"iteration": snapshot.iteration, "sha256": _checksum(items, snapshot.config),
             "format": 1}
    if snapshot.config:
        attrs["config"] = snapshot.config
    write_hdf5_atomically(path, items, attrs)


def read_snapshot(path: str) -> Snapshot:
    """Read and verify a snapshot; DataError if it is unreadable or its checksum is wrong."""
    try:
        with h5py.File(path, "r") as handle:
            items = read_hdf5_arrays(handle)
            iteration = int(handle.attrs["iteration"])
            expected = str(handle.attrs["sha256"])
            config = str(handle.attrs.get("config", ""))
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise DataError(f"snapshot {path} is unreadable: {' '.join(str(exc).split())}") from None
    if _checksum(items, config) != expected:
        raise DataError(f"snapshot {path} fails its checksum")
    snapshot = Snapshot(iteration, {}, {}, {}, {}, config)
    for key, value in items.items():
        group, _, rest = key.partition("/")
        if group == "layers":
            layer, _, name = rest.rpartition("/")
            snapshot.layers.setdefault(layer, {})[name] = value
        elif group in GROUPS:
            getattr(snapshot, group)[rest] = value
    return snapshot


def list_snapshots(folder: str) -> list[str]:
    """Snapshot files in a folder by name, newest name first (unverified: see scan_snapshots)."""
    paths = [p for p in glob.glob(os.path.join(folder, "snapshot-*.h5"))
             if SNAPSHOT_PATTERN.search(p)]
    return sorted(paths, reverse=True)


def set_aside_paths(folder: str) -> list[str]:
    """Damaged snapshots earlier scans renamed out of the way (kept for inspection)."""
    return sorted(glob.glob(os.path.join(folder, f"snapshot-*.h5{DAMAGED_SUFFIX}")))


def verify_snapshot(path: str) -> Snapshot:
    """read_snapshot, and the iteration inside must be the one the file name claims."""
    snapshot = read_snapshot(path)
    named = int(SNAPSHOT_PATTERN.search(path).group(1))
    if snapshot.iteration != named:
        raise DataError(f"snapshot {path} holds iteration {snapshot.iteration}, not {named}")
    return snapshot


@dataclass
class SnapshotScan:
    """What a snapshot folder holds after every file was verified."""

    valid: list[tuple[int, str]]  # (iteration, path), newest iteration first
    damaged: list[tuple[str, str]]  # (path, what is wrong with it)
    newest: Snapshot | None  # the verified snapshot of the newest iteration


def scan_snapshots(folder: str) -> SnapshotScan:
    """Verify every snapshot; order the good ones by the iteration they hold, never by name."""
    valid: list[tuple[int, str]] = []
    damaged: list[tuple[str, str]] = []
    newest: Snapshot | None = None
    for path in list_snapshots(folder):
        try:
            snapshot = verify_snapshot(path)
        except DataError as exc:
            damaged.append((path, str(exc)))
            continue
        valid.append((snapshot.iteration, path))
        if newest is None or snapshot.iteration > newest.iteration:
            newest = snapshot
    valid.sort(reverse=True)
    return SnapshotScan(valid, damaged, newest)


def set_aside(damaged: list[tuple[str, str]]) -> list[str]:
    """Rename damaged snapshots to NAME.damaged, so no later scan or pruning counts them among
    the kept ones (they stay for inspection); returns one line per file saying so."""
    lines = []
    for path, problem in damaged:
        os.replace(path, path + DAMAGED_SUFFIX)
        lines.append(f"{problem}; skipping it, set aside as "
                     f"{os.path.basename(path)}{DAMAGED_SUFFIX}")
    return lines


def newest_valid_snapshot(folder: str, damaged: list[str] | None = None) -> Snapshot | None:
    """The verified snapshot of the highest iteration; damaged ones are skipped with a warning,
    or, given a list, with what is wrong with each appended to it (the files stay as they are:
    for readers of a run, which may be read-only)."""
    scan = scan_snapshots(folder)
    for _, problem in scan.damaged:
        if damaged is None:
            warnings.warn(f"{problem}; skipping it", stacklevel=2)
        else:
            damaged.append(problem)
    return scan.newest


def prune_snapshots(folder: str, keep: int) -> list[str]:
    """Keep the `keep` verified snapshots of the highest iterations and delete the other good
    ones; damaged ones are set aside first, so they never take a good one's place. Returns one
    line per damaged file found."""
    scan = scan_snapshots(folder)
    for _, path in scan.valid[keep:]:
        os.unlink(path)
    return set_aside(scan.damaged)
