"""Load a finished (or running) run directory and predict with it, without rebuilding by hand.

`load_run(dir)` gives the parsed config and the newest parameters (a verified snapshot, else the
exported weights.h5); `kept_snapshots` and `load_snapshot` give any kept snapshot's instead;
`Predictor` builds a net that takes chosen blobs as inputs and returns chosen blobs, batching and
padding for any number of rows.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from mochapy.backends import get_backend
from mochapy.config import RunConfig, load_config
from mochapy.errors import DataError
from mochapy.net import Net
from mochapy.snapshots import SNAPSHOT_PATTERN, list_snapshots, newest_valid_snapshot, read_snapshot


@dataclass
class LoadedRun:
    path: str
    config: RunConfig
    params: dict[str, np.ndarray]
    iteration: int | None


def read_weights(path: str) -> dict[str, np.ndarray]:
    """Parameters from a weights.h5 (or a snapshot): the arrays under /params."""
    try:
        with h5py.File(path, "r") as handle:
            group = handle["params"]
            return {key: group[key][()] for key in group}
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read weights from {path}: {' '.join(str(exc).split())}") from None


def load_run(run_dir: str) -> LoadedRun:
    """A run directory's config and its newest valid parameters."""
    config_path = os.path.join(run_dir, "net.yaml")
    if not os.path.isfile(config_path):
        raise DataError(f"{run_dir} is not a run directory (no net.yaml)")
    config = load_config(config_path)
    damaged: list[str] = []
    snapshot = newest_valid_snapshot(os.path.join(run_dir, "snapshots"), damaged)
    weights = os.path.join(run_dir, "weights.h5")
    if snapshot is None and not os.path.isfile(weights):
        # the damage is the reason: one error line that says so, not a warning and an error
        why = f" ({damaged[0]})" if damaged else ""
        raise DataError(f"{run_dir} holds no valid snapshot and no weights.h5{why}")
    for problem in damaged:
        warnings.warn(f"{problem}; skipping it", stacklevel=2)
    if snapshot is not None:
        return LoadedRun(run_dir, config, snapshot.params, snapshot.iteration)
    return LoadedRun(run_dir, config, read_weights(weights), None)


def kept_snapshots(run_dir: str) -> dict[int, str]:
    """Iteration (from the file name) -> path of every snapshot a run or stage directory kept."""
    return {int(SNAPSHOT_PATTERN.search(path).group(1)): path
            for path in list_snapshots(os.path.join(run_dir, "snapshots"))}


def load_snapshot(run_dir: str, path: str) -> LoadedRun:
    """A run or stage directory's config with the parameters of one snapshot (e.g. one that
    kept_snapshots lists): the net as it was at that iteration, for evaluating a running stage."""
    snapshot = read_snapshot(path)
    config = load_config(os.path.join(run_dir, "net.yaml"))
    return LoadedRun(run_dir, config, snapshot.params, snapshot.iteration)


class Predictor:
    """Runs part of a trained net: feed `inputs` (blob name -> per-row shape), fetch `outputs`."""

    def __init__(
        self,
        run: LoadedRun,
        inputs: dict[str, tuple[int, ...]],
        outputs: Sequence[str],
        batch_size: int = 100,
        backend: str = "cpu",
    ) -> None:
        config = run.config
        self.outputs = list(outputs)
        self.net = Net(
            f"{config.name}-predict", get_backend(backend, config.dtype), config.layers,
            seed=config.seed, phase="test", batch_size=batch_size, inputs=inputs,
            outputs=self.outputs,
        )
        self.net.params.load_host_arrays(
            {k: v for k, v in run.params.items() if k in self.net.params.params}, run.path
        )
        self.inputs = inputs
        self.batch_size = batch_size

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        """Feed whole arrays (same number of rows each); returns every output for every row."""
        if set(arrays) != set(self.inputs):
            raise DataError(f"predictor needs inputs {sorted(self.inputs)}, got {sorted(arrays)}")
        n = len(next(iter(arrays.values())))
        results = {name: [] for name in self.outputs}
        bs = self.batch_size
        for start in range(0, n, bs):
            stop = min(start + bs, n)
            for name, values in arrays.items():
                batch = np.zeros((bs, *self.inputs[name]), dtype=self.net.backend.dtype)
                batch[: stop - start] = np.asarray(values[start:stop]).reshape(
                    stop - start, *self.inputs[name]
                )
                self.net.set_input(name, batch)
            self.net.forward()
            for name in self.outputs:
                results[name].append(self.net.fetch(name)[: stop - start])
        return {name: np.concatenate(parts) for name, parts in results.items()}
