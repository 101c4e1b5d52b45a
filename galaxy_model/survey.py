"""Survey-scale synth, prepare, encode and evaluate: one Dask task per shard (galaxy_model.cluster).

Each `*_survey` function is the Python API behind a command's sharded path. Tasks that write
output shards go through galaxy_model.shards' job protocol (job.json, atomic shards, manifest
last), so a rerun computes only the missing shards; evaluate's tasks return per-image records
that the client concatenates in row order and summarises exactly as the one-process evaluate
does (its parts are kept beside the JSON until it is written, for the same resumption).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from galaxy_model.cluster import Unit, cached_model, map_units, read_unit, units_of
from galaxy_model.dataset import GalaxyDataset
from galaxy_model.evaluation import SERSIC_PSF_SIGMA
from galaxy_model.latents import Latents, encode_dataset, write_latents
from galaxy_model.shards import (
    DEFAULT_SHARD_SIZE,
    data_identity,
    finish_job,
    row_ranges,
    shard_name,
    start_job,
    write_shard,
)
from mochapy.atomic import write_atomically
from mochapy.errors import DataError
from mochapy.outputs import claim_output, files_under

# Opens the Dask client to run on (e.g. functools.partial(cluster.dask_client, ...)); called only
# after the inputs were checked, so bad input fails before a cluster starts.
Cluster = Callable[[], AbstractContextManager[Any]]


def run_identity(run_dir: str) -> dict[str, Any]:
    """What identifies a trained run in job.json: its files' names, sizes and times."""
    files = sorted(files_under(run_dir))
    return {"path": os.path.abspath(run_dir),
            "files": {os.path.relpath(f, run_dir): [os.path.getsize(f), os.stat(f).st_mtime_ns]
                      for f in files}}


# ------------------------------------------------------------------------------------- encode


def _encode_unit(unit: Unit, run_dir: str, out_dir: str | None, data: str) -> Latents | int:
    """Encode one unit; write its latents shard when `out_dir` is given, else return them."""
    latents = encode_dataset(cached_model(run_dir), read_unit(unit))
    if out_dir is None:
        return latents
    write_latents(os.path.join(out_dir, shard_name(unit.index)), latents, run_dir=run_dir,
                  data=data)
    return len(latents.mean)


def encode_survey(cluster: Cluster, run_dir: str, data: str, out: str, force: bool = False,
                  shard_size: int = DEFAULT_SHARD_SIZE, progress: bool = True) -> int:
    """g_mu(x), g_sigma(x) of every image of `data`, one task per shard, into `out`: a sharded
    directory (a latents shard per input shard; resumable) or one .h5 file. Returns the image
    count."""
    units = units_of(data, shard_size)
    inputs = [data, *files_under(run_dir)]
    if out.lower().endswith((".h5", ".hdf5")):
        claim_output(out, inputs, force)
        with cluster() as client:
            parts = map_units(client, _encode_unit, units, run_dir, None, data, label="encode",
                              progress=progress)
        write_latents(out, Latents(np.concatenate([p.mean for p in parts]),
                                   np.concatenate([p.sd for p in parts]),
                                   [name for p in parts for name in p.provenance]),
                      run_dir=run_dir, data=data)
        return sum(len(p.mean) for p in parts)
    identity = {"command": "encode", "run": run_identity(run_dir), "data": data_identity(data),
                "shard_size": shard_size}
    done = start_job(out, identity, inputs, force)
    todo = [unit for unit in units if shard_name(unit.index) not in done]
    with cluster() as client:
        map_units(client, _encode_unit, todo, run_dir, out, data, label="encode",
                  progress=progress)
    finish_job(out, [shard_name(unit.index) for unit in units],
               {"description": "q(z|x) = N(mean, sd^2) per image", "run_dir": run_dir,
                "data": data})
    return sum(unit.rows for unit in units)


# ----------------------------------------------------------------------------------- evaluate


def _evaluate_unit(unit: Unit, run_dir: str, parts_dir: str | None, label: str,
                   baselines: tuple[str, ...],
                   psf_sigma: float) -> tuple[int, dict[str, np.ndarray]]:
    """(pixels per image, per-image records) of one unit; kept in `parts_dir` when given."""
    from galaxy_model.evaluation import evaluate, image_records

    dataset = read_unit(unit)
    result = evaluate(cached_model(run_dir), dataset, label=label, first_row=unit.first_row,
                      baselines=baselines, psf_sigma=psf_sigma)
    pixels, records = int(np.prod(dataset.data.shape[1:])), image_records(result)
    if parts_dir is not None:
        path = os.path.join(parts_dir, _part_name(unit))
        write_atomically(path, lambda temp: _save_part(temp, pixels, records))
    return pixels, records


def _part_name(unit: Unit) -> str:
    return f"shard-{unit.index:05d}.npz"


def _save_part(path: str, pixels: int, records: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, pixels=np.array(pixels), **records)


def _load_part(path: str) -> tuple[int, dict[str, np.ndarray]]:
    with np.load(path) as part:
        return int(part["pixels"]), {k: part[k] for k in part.files if k != "pixels"}


def evaluate_survey(cluster: Cluster, run_dir: str, data: str, parts_dir: str | None = None,
                    force: bool = False, progress: bool = True,
                    baselines: tuple[str, ...] = ("gaussian",),
                    psf_sigma: float = SERSIC_PSF_SIGMA) -> dict:
    """The evaluate summary of `data`, one task per shard, reduced exactly on the client.

    parts_dir: where each shard's per-image records are kept until the caller has written the
    summary (a rerun after a kill reuses them); remove it with `finish_evaluation`.
    baselines, psf_sigma: as for galaxy_model.evaluation.evaluate (each image's fit is its own,
    so the Sérsic comparison too is the one-process answer)."""
    from galaxy_model.evaluation import check_baselines, summarise_records

    check_baselines(baselines)
    units = units_of(data)
    done: set[str] = set()
    if parts_dir is not None:
        identity = {"command": "evaluate", "run": run_identity(run_dir),
                    "data": data_identity(data), "baselines": list(baselines),
                    "psf_sigma": psf_sigma}
        done = start_job(parts_dir, identity, [data, *files_under(run_dir)], force)
    todo = [unit for unit in units if _part_name(unit) not in done]
    with cluster() as client:
        results = map_units(client, _evaluate_unit, todo, run_dir, parts_dir, data, baselines,
                            psf_sigma, label="evaluate", progress=progress)
    computed = dict(zip([unit.index for unit in todo], results, strict=True))
    parts = [computed[unit.index] if unit.index in computed
             else _load_part(os.path.join(parts_dir, _part_name(unit))) for unit in units]
    pixels = {count for count, _ in parts}
    if len(pixels) > 1:
        raise DataError(f"{data}: shards hold images of different sizes ({sorted(pixels)} pixels)")
    records = {name: np.concatenate([part[name] for _, part in parts]) for name in parts[0][1]}
    return summarise_records(records, pixels.pop(), data)


def finish_evaluation(parts_dir: str) -> None:
    """Drop the per-shard records once the summary they make is written."""
    shutil.rmtree(parts_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------ prepare


@dataclass(frozen=True)
class FileGroup:
    """Consecutive input files whose images make one output shard."""

    index: int
    files: tuple[str, ...]


def group_files(files: list[str], shard_size: int) -> list[FileGroup]:
    """Consecutive files holding about `shard_size` images each (an HDF5 input counts its
    rows; a file is never split)."""
    groups, current, count = [], [], 0
    for path in files:
        current.append(path)
        count += _image_count(path)
        if count >= shard_size:
            groups.append(FileGroup(len(groups), tuple(current)))
            current, count = [], 0
    if current:
        groups.append(FileGroup(len(groups), tuple(current)))
    return groups


def _image_count(path: str) -> int:
    if not path.lower().endswith((".h5", ".hdf5")):
        return 1
    try:
        with h5py.File(path, "r") as handle:
            arrays = [node for node in handle.values() if isinstance(node, h5py.Dataset)]
            return max((node.shape[0] for node in arrays if node.ndim >= 3), default=1)
    except OSError:
        return 1  # prepare's reader reports the file


def _prepare_group(group: FileGroup, out_dir: str, size: int,
                   bands: int) -> tuple[int, list[str]]:
    """Prepare one group of files into its shard; (images written, reasons for skips)."""
    from galaxy_model.prepare import PrepareWarning, prepare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrepareWarning)
        try:
            dataset, summary = prepare(list(group.files), size=size, bands=bands)
        except DataError as exc:  # no usable image in this group: no shard, and say why
            return 0, [str(exc)]
    write_shard(out_dir, group.index, dataset)
    return len(dataset), summary.skipped


def prepare_survey(cluster: Cluster, inputs: list[str], out: str, size: int, bands: int,
                   shard_size: int, force: bool = False,
                   progress: bool = True) -> tuple[int, list[str]]:
    """Prepare every image under `inputs` into a sharded directory, one task per group of
    files; (images written, reasons for the files and images skipped)."""
    from galaxy_model.prepare import PrepareSummary, expand_inputs

    summary = PrepareSummary()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = list(expand_inputs(inputs, summary))
    listing = [[path, os.path.getsize(path), os.stat(path).st_mtime_ns] for path in files]
    identity = {"command": "prepare", "size": size, "bands": bands, "shard_size": shard_size,
                "inputs": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}
    done = start_job(out, identity, [*inputs, *files], force)
    groups = [g for g in group_files(files, shard_size) if shard_name(g.index) not in done]
    with cluster() as client:
        results = map_units(client, _prepare_group, groups, out, size, bands, label="prepare",
                            progress=progress)
    skipped = summary.skipped + [reason for _, reasons in results for reason in reasons]
    names = sorted(name for name in os.listdir(out) if name.startswith("shard-"))
    if not names:
        raise DataError(f"no usable image among {len(inputs)} input(s): "
                        f"{skipped[0] if skipped else 'no input files found'}")
    from galaxy_model.prepare import CENTRING_DESCRIPTION

    finish_job(out, names, {"source": "prepare", "centring": CENTRING_DESCRIPTION,
                            "inputs": " ".join(inputs), "size": size, "bands": bands})
    return sum(count for count, _ in results), skipped


# -------------------------------------------------------------------------------------- synth


def synth_rows(start: int, stop: int, seed: int, bands: int,
               attrs: dict[str, Any]) -> GalaxyDataset:
    """Images [start, stop) of `synthesize(n, seed, bands)` for any n >= stop, rendered alone
    (synth draws chunk i from its own random stream)."""
    from galaxy_model.synth import CHUNK_SIZE, render_chunk

    parts = []
    for chunk in range(start // CHUNK_SIZE, (stop - 1) // CHUNK_SIZE + 1):
        first = chunk * CHUNK_SIZE
        rendered = render_chunk(seed, chunk, bands, count=min(CHUNK_SIZE, stop - first))
        parts.append([array[max(start - first, 0):] for array in rendered])
    data, ivar, mask, scale, offset = (np.concatenate(arrays) for arrays in zip(*parts,
                                                                                strict=True))
    return GalaxyDataset(data=data, ivar=ivar, mask=mask, scale=scale, offset=offset,
                         provenance=[f"synth seed={seed} index={i}" for i in range(start, stop)],
                         attrs=attrs)


def _synth_shard(job: tuple[int, int, int], out_dir: str, seed: int, bands: int,
                 attrs: dict[str, Any]) -> int:
    index, start, stop = job
    write_shard(out_dir, index, synth_rows(start, stop, seed, bands, attrs))
    return stop - start


def synth_survey(cluster: Cluster, count: int, out: str, seed: int, bands: int, shard_size: int,
                 force: bool = False, progress: bool = True) -> None:
    """`count` synthetic galaxies into a sharded directory, one task per shard; the images
    are those of the one-file `synthesize(count, seed, bands)`, row for row."""
    from galaxy_model.synth import synthesize

    identity = {"command": "synth", "n": count, "seed": seed, "bands": bands,
                "shard_size": shard_size}
    done = start_job(out, identity, [], force)
    attrs = synthesize(1, seed=seed, bands=bands).attrs
    jobs = [(index, start, stop)
            for index, (start, stop) in enumerate(row_ranges(count, shard_size))]
    todo = [job for job in jobs if shard_name(job[0]) not in done]
    with cluster() as client:
        map_units(client, _synth_shard, todo, out, seed, bands, attrs, label="synth",
                  progress=progress)
    finish_job(out, [shard_name(index) for index, _, _ in jobs], attrs)
