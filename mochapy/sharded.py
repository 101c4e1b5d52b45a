"""Sharded HDF5 data sets: a directory of HDF5 files (shards) plus `manifest.json`.

A survey does not fit in one file or in memory, so its rows are split over shards that all hold
the same datasets with the same per-row shape. The manifest names the shards in row order with
their row counts and SHA-256 checksums, the per-row shape and dtype of every dataset, and the
schema version; it is written last and atomically, so a directory with a manifest is complete and
one without it is work in progress. Any tool can read a shard: it is an ordinary HDF5 file.

This module is the engine's view (HDF5Data streams from it); galaxy_model.shards writes galaxy
data sets in this format.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import h5py

from mochapy.atomic import write_text_atomically
from mochapy.errors import DataError

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "mochapy sharded HDF5"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it."""

    name: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The contents of `manifest.json`: shards in row order and the datasets each one holds."""

    directory: str
    shards: tuple[ShardEntry, ...]
    datasets: dict[str, dict[str, Any]]  # name -> {"shape": per-row shape, "dtype": str}
    attrs: dict[str, Any]
    schema_version: int = SCHEMA_VERSION

    @property
    def n_rows(self) -> int:
        return sum(shard.rows for shard in self.shards)

    def path(self, shard: ShardEntry | int) -> str:
        entry = self.shards[shard] if isinstance(shard, int) else shard
        return os.path.join(self.directory, entry.name)

    def offsets(self) -> list[int]:
        """The global index of each shard's first row."""
        starts, total = [], 0
        for shard in self.shards:
            starts.append(total)
            total += shard.rows
        return starts

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_NAME,
                "schema_version": self.schema_version,
                "n_rows": self.n_rows,
                "datasets": self.datasets,
                "shards": [vars(shard) for shard in self.shards],
                "attrs": self.attrs,
            },
            indent=1,
        )


def is_sharded(path: str) -> bool:
    """True for a directory that holds a manifest (a complete sharded data set)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST_NAME))


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB blocks (flat memory, any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_datasets(path: str, names: list[str] | None = None) -> tuple[int, dict[str, dict]]:
    """(rows, {name: {"shape", "dtype"}}) of the row-indexed datasets of one HDF5 file."""
    with h5py.File(path, "r") as handle:
        names = names if names is not None else sorted(
            key for key, node in handle.items() if isinstance(node, h5py.Dataset) and node.ndim
        )
        described, rows = {}, set()
        for name in names:
            node = handle[name]
            rows.add(node.shape[0])
            described[name] = {"shape": list(node.shape[1:]), "dtype": _dtype_name(node.dtype)}
    if len(rows) > 1:
        raise DataError(f"{path}: its datasets have different row counts {sorted(rows)}")
    return (rows.pop() if rows else 0), described


def _dtype_name(dtype) -> str:
    return "str" if h5py.check_string_dtype(dtype) else str(dtype)


def write_manifest(directory: str, shard_names: list[str], attrs: dict[str, Any]) -> Manifest:
    """Check the shards against each other, checksum them and write the manifest (atomically)."""
    entries, datasets = [], None
    for name in shard_names:
        path = os.path.join(directory, name)
        rows, described = describe_datasets(path)
        if datasets is None:
            datasets = described
        elif described != datasets:
            raise DataError(f"{path}: datasets {described} differ from the first shard's "
                            f"{datasets}")
        entries.append(ShardEntry(name, rows, file_sha256(path)))
    if not entries:
        raise DataError(f"{directory}: no shards to list in a manifest")
    manifest = Manifest(os.path.abspath(directory), tuple(entries), datasets, attrs)
    write_text_atomically(os.path.join(directory, MANIFEST_NAME), manifest.to_json())
    return manifest


def read_manifest(directory: str) -> Manifest:
    """Parse `directory/manifest.json`; DataError (one line) for anything missing or malformed."""
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: no such sharded data set directory")
    if not os.path.isfile(path):
        raise DataError(f"{directory}: no {MANIFEST_NAME} (not a sharded data set, or its "
                        "writing did not finish)")
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
        version = int(raw["schema_version"])
        if version > SCHEMA_VERSION:
            raise DataError(f"{path}: schema_version {version} is newer than this reader's "
                            f"{SCHEMA_VERSION}")
        shards = tuple(ShardEntry(str(s["name"]), int(s["rows"]), str(s["sha256"]))
                       for s in raw["shards"])
        datasets = {str(k): {"shape": list(v["shape"]), "dtype": str(v["dtype"])}
                    for k, v in raw["datasets"].items()}
        manifest = Manifest(os.path.abspath(directory), shards, datasets,
                            dict(raw.get("attrs", {})), version)
    except DataError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None
    if not shards:
        raise DataError(f"{path}: lists no shards")
    for shard in shards:
        if os.path.basename(shard.name) != shard.name or shard.rows <= 0:
            raise DataError(f"{path}: bad shard entry {shard.name!r} ({shard.rows} rows)")
    return manifest


def check_shard(manifest: Manifest, index: int, verify_checksum: bool = False) -> None:
    """DataError naming the shard if it is missing, or its rows, datasets or bytes disagree with
    the manifest (the checksum is read only when asked: it costs a pass over the file)."""
    entry = manifest.shards[index]
    path = manifest.path(entry)
    if not os.path.isfile(path):
        raise DataError(f"{path}: shard listed in {MANIFEST_NAME} is missing")
    try:
        rows, described = describe_datasets(path, list(manifest.datasets))
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: unreadable shard ({' '.join(str(exc).split())})") from None
    if rows != entry.rows:
        raise DataError(f"{path}: holds {rows} rows, {MANIFEST_NAME} says {entry.rows}")
    if described != manifest.datasets:
        bad = next(k for k in manifest.datasets if described.get(k) != manifest.datasets[k])
        raise DataError(f"{path}: dataset {bad!r} is {described.get(bad)}, {MANIFEST_NAME} says "
                        f"{manifest.datasets[bad]} (shards of different shapes or bands)")
    if verify_checksum and file_sha256(path) != entry.sha256:
        raise DataError(f"{path}: checksum differs from {MANIFEST_NAME} (corrupt or replaced "
                        "shard)")


def open_sharded(directory: str) -> Manifest:
    """The manifest of a sharded data set after checking every shard's rows and datasets."""
    manifest = read_manifest(directory)
    for index in range(len(manifest.shards)):
        check_shard(manifest, index)
    return manifest


def sharded_directory(source: str, base_dir: str = ".") -> str | None:
    """The directory a data `source` names if it is a sharded data set (relative to
    `base_dir`), else None: HDF5Data streams such a source instead of loading it."""
    path = source if os.path.isabs(source) else os.path.join(base_dir, source)
    return path if os.path.isdir(path) else None
