"""Shard-parallel work on Dask: one task per shard, results reduced on the client.

Preparing, encoding and evaluating a survey is embarrassingly parallel and long, so it runs on
dask.distributed, the engine astronomers already run on their clusters: a LocalCluster over this
machine's cores by default, or an existing cluster by scheduler address or scheduler file (for
instance one started by dask-jobqueue's SLURMCluster; docs/scale.md). Every task reads one unit
of input (a shard, or a row range of a one-file data set) and either writes its own output shard
atomically or returns per-image records that the client reduces exactly (concatenation in row
order, then the same summary as the one-process path). A worker that dies mid-task is replaced by
Dask and its task run again elsewhere; tasks are pure functions of their input, so the result is
identical.

Dask is imported only here and only when a cluster is used: `import mochapy` and one-process
commands never load it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import click
import h5py

from galaxy_model.dataset import GalaxyDataset, read_dataset, read_shard
from galaxy_model.shards import DEFAULT_SHARD_SIZE, row_ranges
from mochapy.errors import DataError, MochaError
from mochapy.sharded import open_sharded, read_manifest

CONNECT_TIMEOUT_S = 10
TASK_RETRIES = 2


class ClusterError(MochaError):
    """The Dask scheduler cannot be reached or the cluster cannot start (names the address)."""


@dataclass(frozen=True)
class Unit:
    """The input of one task: rows [start, stop) of `path`, global rows from `first_row`.

    `sharded` units are whole shards of a sharded directory (checked against its manifest,
    checksum included, when read); others are row ranges of a one-file data set.
    """

    index: int
    path: str
    start: int
    stop: int
    first_row: int
    sharded: bool

    @property
    def rows(self) -> int:
        return self.stop - self.start


def units_of(spec: str, shard_size: int = DEFAULT_SHARD_SIZE) -> list[Unit]:
    """The task inputs of a data set: its shards, or `shard_size` row ranges of one file (a
    built-in split is its cached file)."""
    if os.path.isdir(spec):
        manifest = open_sharded(spec)
        return [Unit(i, spec, 0, shard.rows, first, True)
                for i, (shard, first) in enumerate(zip(manifest.shards, manifest.offsets(),
                                                       strict=True))]
    path = spec
    if spec.startswith("builtin:"):
        from galaxy_model.builtin import resolve_source

        path = resolve_source(spec)
    if not os.path.isfile(path):
        raise DataError(f"{spec}: no such data set file or sharded directory")
    try:
        with h5py.File(path, "r") as handle:
            total = handle["data"].shape[0]
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a readable data set ({' '.join(str(exc).split())})") from None
    return [Unit(i, path, start, stop, start, False)
            for i, (start, stop) in enumerate(row_ranges(total, shard_size))]


def read_unit(unit: Unit) -> GalaxyDataset:
    """The images of one unit (a shard is checked against its manifest first)."""
    if unit.sharded:
        return read_shard(read_manifest(unit.path), unit.index)
    return read_dataset(unit.path, limit=unit.rows, start=unit.start)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, scheduler_file: str | None = None,
                workers: int | None = None, processes: bool = True) -> Iterator[Any]:
    """A dask.distributed Client: of the cluster at `scheduler` (an address) or described by
    `scheduler_file`, else of a new LocalCluster with `workers` single-threaded workers
    (default: one per core), closed on exit."""
    from dask.distributed import Client, LocalCluster

    if scheduler and scheduler_file:
        raise ClusterError("give --scheduler or --scheduler-file, not both")
    if scheduler or scheduler_file:
        where = scheduler or f"the scheduler file {scheduler_file}"
        if scheduler_file and not os.path.isfile(scheduler_file):
            raise ClusterError(f"{scheduler_file}: no such scheduler file")
        try:
            client = Client(address=scheduler, scheduler_file=scheduler_file,
                            timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {where}: "
                               f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
        with client:
            yield client
        return
    with contextlib.ExitStack() as stack:
        if not processes:  # worker threads share this process's BLAS: one thread for all
            stack.enter_context(one_blas_thread())
        cluster = stack.enter_context(LocalCluster(
            n_workers=_local_workers(workers), threads_per_worker=1, processes=processes,
            dashboard_address=":0", silence_logs=logging.ERROR))
        yield stack.enter_context(Client(cluster))


def _local_workers(workers: int | None) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return workers or cores or 1


def one_blas_thread() -> Any:
    """Limit BLAS to one thread (a context manager, or for good when not used as one).

    A GEMM's last bits depend on how many BLAS threads share it, so every survey computation,
    in a task or in one process, runs on one BLAS thread: the answer is then the same whatever
    the number of workers or shards. Parallelism comes from Dask's workers instead."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def map_units(client: Any, task: Callable[..., Any], units: Sequence[Any], *args: Any,
              label: str = "shards", progress: bool = True) -> list[Any]:
    """Run `task(unit, *args)` for every unit on the cluster, one task per unit, and return the
    results in unit order. A task that fails is retried; if it still fails, the other tasks
    are cancelled and its error (a DataError names the shard) is raised here."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    futures = client.map(task, units, *[[arg] * len(units) for arg in args], pure=False,
                         retries=TASK_RETRIES)
    show = progress and sys.stderr.isatty()
    try:
        with tqdm(total=len(units), desc=label, unit="shard", disable=not show) as bar:
            for future in as_completed(futures):
                future.result()  # raises the task's own error
                bar.update(1)
        return client.gather(futures)
    finally:
        client.cancel(futures)


_models = threading.local()


def cached_model(run_dir: str) -> Any:
    """The run's GalaxyVAE, loaded once per worker thread (its nets keep per-call state, so
    threads do not share one); the worker's BLAS is limited to one thread (one_blas_thread)."""
    from galaxy_model.model import GalaxyVAE

    one_blas_thread()
    cache = getattr(_models, "by_run", None)
    if cache is None:
        cache = _models.by_run = {}
    if run_dir not in cache:
        cache[run_dir] = GalaxyVAE.load(run_dir)
    return cache[run_dir]


def cluster_options(command: Callable) -> Callable:
    """The --scheduler / --scheduler-file / --workers options of the data commands."""
    options = [
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Address of a running Dask scheduler (e.g. tcp://host:8786)."),
        click.option("--scheduler-file", default=None, type=click.Path(dir_okay=False),
                     help="The scheduler file of a running Dask cluster (dask-jobqueue, "
                          "dask-mpi)."),
        click.option("--workers", default=None, type=click.IntRange(min=1),
                     help="Workers of the local Dask cluster (default: one per core)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def wants_cluster(data: str, scheduler: str | None, scheduler_file: str | None,
                  workers: int | None) -> bool:
    """Sharded data always runs on Dask; a one-file data set does when a cluster is named."""
    return os.path.isdir(data) or bool(scheduler or scheduler_file or workers)
