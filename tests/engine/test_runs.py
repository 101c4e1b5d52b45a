"""mochapy.runs: a run directory's kept snapshots, each loadable as the net at its iteration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mochapy.config import load_config
from mochapy.runs import kept_snapshots, load_run, load_snapshot
from mochapy.snapshots import read_snapshot
from mochapy.training import train


def test_every_kept_snapshot_loads_as_the_net_at_its_iteration(tiny_example: Path,
                                                               tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    train(load_config(str(tiny_example)), run_dir, progress=False)
    files = kept_snapshots(run_dir)
    assert sorted(files) == [200, 400, 600]
    loaded = load_snapshot(run_dir, files[400])
    assert loaded.iteration == 400 and loaded.config.name == load_run(run_dir).config.name
    stored = read_snapshot(files[400]).params
    assert loaded.params.keys() == stored.keys()
    assert all(np.array_equal(loaded.params[key], stored[key]) for key in stored)
    newest = load_run(run_dir)  # the newest snapshot: what load_snapshot gives at 600
    assert all(np.array_equal(newest.params[key], load_snapshot(run_dir, files[600]).params[key])
               for key in stored)
    assert kept_snapshots(str(tmp_path / "nowhere")) == {}
