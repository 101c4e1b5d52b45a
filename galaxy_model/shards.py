"""Galaxy data sets too large for one file: shards of today's HDF5 schema plus a manifest.

A sharded data set is a directory of `shard-NNNNN.h5` files, each an ordinary dataset file
(galaxy_model.dataset: data, ivar, mask, scale, offset, provenance, attributes), and the
`manifest.json` of mochapy.sharded (shard names in row order, row counts, SHA-256 checksums,
per-row shapes, schema version). Shards are written one at a time, each atomically; the manifest
comes last, so a directory without one is an unfinished job, never mistaken for a data set.

Jobs that write shards (synth, prepare, encode on a Dask cluster) record what they compute in
`job.json` beside the shards, so a rerun after a crash or kill keeps the shards already written
and computes only the rest; a finished output (with a manifest) is replaced only with --force.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from galaxy_model.dataset import GalaxyDataset, concatenate, write_dataset
from mochapy.atomic import PARTIAL_PREFIX, remove_partial_files, write_text_atomically
from mochapy.errors import DataError
from mochapy.outputs import OutputError, same_file
from mochapy.sharded import (
    MANIFEST_NAME,
    Manifest,
    is_sharded,
    open_sharded,
    write_manifest,
)

JOB_NAME = "job.json"
DEFAULT_SHARD_SIZE = 10_000
HDF5_SUFFIXES = (".h5", ".hdf5")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def wants_directory(out: str, shard_size: int | None) -> bool:
    """Whether an --out path means a sharded directory: any name without an HDF5 suffix; a .h5
    name with --shard-size is refused (one line), as it cannot be both."""
    is_file = out.lower().endswith(HDF5_SUFFIXES)
    if is_file and shard_size is not None:
        raise DataError(f"--out {out}: --shard-size writes a directory of shards; give a "
                        "directory name (no .h5 suffix)")
    return not is_file


def row_ranges(total: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard of `shard_size` rows (the last may be shorter)."""
    return [(start, min(start + shard_size, total)) for start in range(0, total, shard_size)]


def with_mask(dataset: GalaxyDataset) -> GalaxyDataset:
    """The dataset with an all-good mask if it had none: every shard then holds the same
    datasets, as the manifest requires."""
    if dataset.mask is None:
        dataset.mask = np.zeros(dataset.data.shape, np.uint8)
    return dataset


def write_shard(directory: str, index: int, dataset: GalaxyDataset) -> str:
    """Write one shard atomically; returns its file name."""
    name = shard_name(index)
    write_dataset(os.path.join(directory, name), with_mask(dataset))
    return name


def write_in_shards(directory: str, pieces: Iterable[GalaxyDataset], shard_size: int) -> Manifest:
    """Cut a stream of datasets into shards of `shard_size` rows, write each as soon as it is
    full (memory: one shard), then the manifest. `directory` must be new or empty."""
    os.makedirs(directory, exist_ok=True)
    names: list[str] = []
    attrs: dict[str, Any] = {}
    for shard in _regroup(pieces, shard_size):
        attrs = attrs or dict(shard.attrs)
        names.append(write_shard(directory, len(names), shard))
    return write_manifest(directory, names, json_attrs(attrs))


def _regroup(pieces: Iterable[GalaxyDataset], shard_size: int) -> Iterator[GalaxyDataset]:
    held: list[GalaxyDataset] = []
    count = 0
    for piece in pieces:
        held.append(piece)
        count += len(piece)
        while count >= shard_size:
            whole = concatenate(held) if len(held) > 1 else held[0]
            yield whole.subset(slice(0, shard_size))
            rest = whole.subset(slice(shard_size, None)) if len(whole) > shard_size else None
            held, count = ([rest], len(rest)) if rest is not None else ([], 0)
    if held:
        yield concatenate(held) if len(held) > 1 else held[0]


def json_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as JSON values (numbers and strings as they are, anything else as text)."""
    plain = {}
    for key, value in attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        plain[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return plain


# ------------------------------------------------------------------- jobs that write shards


def start_job(directory: str, identity: dict[str, Any], inputs: Iterable[str | None],
              force: bool) -> set[str]:
    """Claim `directory` for a job that writes shards; returns the shard names already done.

    New or empty: the job starts. A finished output (manifest present) is refused unless
    `force`, which clears it. An unfinished one whose job.json records the same `identity` is
    resumed (its complete shards are kept; half-written files are removed); one of another job
    is refused unless `force`. A directory holding anything else, or one of the inputs, is
    refused.
    """
    for candidate in inputs:
        if candidate and os.path.lexists(candidate) and (
                same_file(directory, candidate)
                or os.path.realpath(candidate).startswith(os.path.realpath(directory) + os.sep)):
            raise OutputError(f"{directory} is or holds one of this command's inputs "
                              f"({candidate}); choose another output directory")
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise OutputError(f"{directory} exists and is not a directory")
    job_path = os.path.join(directory, JOB_NAME)
    if is_sharded(directory):
        if not force:
            raise OutputError(f"{directory} holds a finished sharded output; pass --force to "
                              "replace it")
        _clear(directory)
    elif os.path.isfile(job_path):
        if _read_job(job_path) != identity:
            if not force:
                raise OutputError(f"{job_path}: an unfinished job with other inputs or settings "
                                  "is under way here; pass --force to start again")
            _clear(directory)
    elif os.path.isdir(directory) and os.listdir(directory):
        raise OutputError(f"{directory} exists and is not empty (and no unfinished job of this "
                          "command is in it); choose another output directory")
    os.makedirs(directory, exist_ok=True)
    remove_partial_files(directory)
    write_text_atomically(job_path, json.dumps(identity, indent=1, sort_keys=True))
    return {name for name in os.listdir(directory) if _is_shard_file(name)}


def finish_job(directory: str, names: list[str], attrs: dict[str, Any]) -> Manifest:
    """Write the manifest over the finished shards (the output is now complete), then drop
    job.json."""
    remove_partial_files(directory)  # left by a worker killed mid-write; its task ran again
    manifest = write_manifest(directory, names, json_attrs(attrs))
    os.unlink(os.path.join(directory, JOB_NAME))
    return manifest


def _read_job(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _is_shard_file(name: str) -> bool:
    return name.startswith("shard-")


def _clear(directory: str) -> None:
    """Remove what a job of ours wrote here (shards, manifest, job.json), nothing else."""
    for name in os.listdir(directory):
        if _is_shard_file(name) or name in (MANIFEST_NAME, JOB_NAME) or name.startswith(
                PARTIAL_PREFIX):
            os.unlink(os.path.join(directory, name))


def data_identity(spec: str) -> dict[str, Any]:
    """What identifies an input data set in job.json: a sharded one by its shard checksums, a
    file by its size and modification time, a built-in split by name."""
    path = Path(spec)
    if path.is_dir():
        manifest = open_sharded(spec)
        return {"path": os.path.abspath(spec),
                "shards": [shard.sha256 for shard in manifest.shards]}
    if path.is_file():
        stat = path.stat()
        return {"path": os.path.abspath(spec), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"spec": spec}
