"""Divergence the loss does not show (NaN only in a gradient) and an update that makes the
parameters Inf right at a snapshot: training stops with one line naming the iteration and the
layer, and the good snapshots on disk are never replaced by broken ones (the loss-NaN case is in
tests/engine/test_cli.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import yaml

from mochapy.snapshots import list_snapshots, read_snapshot

SCRIPT = Path(sys.executable).with_name("mochapy")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "from mochapy.cli import main; main()"]
BATCH = 4
ZERO_ROW_BATCH = 13  # the iteration whose batch holds the all-zero input row


def mochapy_run(net: Path, cwd: Path, *extra: object) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, "run", str(net), "--out", "run", "--quiet",
                           *map(str, extra)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def snapshot_hashes(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run / "snapshots").iterdir())}


def write_data(folder: Path) -> None:
    """64 rows, unshuffled; row (ZERO_ROW_BATCH - 1) * BATCH is all zeros."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    x[(ZERO_ROW_BATCH - 1) * BATCH] = 0
    with h5py.File(folder / "train.h5", "w") as handle:
        handle["x"] = x
        handle["y"] = rng.standard_normal((64, 1)).astype(np.float32)


def abs_net(folder: Path) -> Path:
    """r = sqrt(h^2) = |h|: finite forward everywhere, but at h = 0 (the zero row, with the bias
    frozen at 0) the backward pass computes inf * 0 = NaN, so only the gradients go bad."""
    raw = {
        "name": "abs", "seed": 0,
        "layers": [
            {"type": "HDF5Data", "name": "data", "source": "train.h5", "batch_size": BATCH,
             "tops": ["x", "y"]},
            {"type": "InnerProduct", "name": "hidden", "bottoms": ["x"], "tops": ["h"],
             "output_dim": 4, "bias_lr": 0.0},
            {"type": "Power", "name": "square", "bottoms": ["h"], "tops": ["h2"], "power": 2},
            {"type": "Power", "name": "root", "bottoms": ["h2"], "tops": ["r"], "power": 0.5},
            {"type": "InnerProduct", "name": "out", "bottoms": ["r"], "tops": ["pred"],
             "output_dim": 1},
            {"type": "SquareLoss", "name": "loss", "bottoms": ["pred", "y"]},
        ],
        "solver": {"method": "sgd", "base_lr": 0.01, "max_iter": 40},
        "coffee_breaks": {"training_summary": {"every": 5}, "snapshot": {"every": 5}},
    }
    write_data(folder)
    net = folder / "abs.yaml"
    net.write_text(yaml.safe_dump(raw, sort_keys=False))
    return net


def test_nan_only_in_a_gradient_stops_with_the_iteration_and_the_layer(tmp_path: Path) -> None:
    net = abs_net(tmp_path)
    line = error_line(mochapy_run(net, tmp_path))
    kept = "run/snapshots/snapshot-000000010.h5"
    assert line == (
        f"error: training diverged at iteration {ZERO_ROW_BATCH}: NaN/Inf first in layer "
        f"'root' (gradient into blob 'h2'); last good snapshot kept: {kept}")
    snapshot = read_snapshot(str(tmp_path / kept))
    assert snapshot.iteration == 10 and all(np.isfinite(v).all() for v in snapshot.params.values())
    with h5py.File(tmp_path / "run" / "statistics.h5", "r") as handle:
        assert np.isfinite(handle["train/loss"][()]).all()  # the loss never showed it

    hashes = snapshot_hashes(tmp_path / "run")
    again = error_line(mochapy_run(net, tmp_path, "--resume"))  # the kept snapshot loads ...
    assert f"at iteration {ZERO_ROW_BATCH}:" in again  # ... and the run diverges just the same
    assert snapshot_hashes(tmp_path / "run") == hashes


def test_an_update_that_makes_parameters_inf_never_replaces_a_good_snapshot(
    tiny_example: Path, tmp_path: Path
) -> None:
    """At iteration 12 the lr jumps to 1e296 (a staged warm-up gone wrong): the forward and
    backward pass of iteration 12 are finite, its update is not, and a snapshot is due then."""
    raw = yaml.safe_load(tiny_example.read_text())
    raw["solver"] = {"method": "sgd", "base_lr": 0.01, "max_iter": 30, "lr_policy": {
        "type": "staged",
        "stages": [[11, "fixed"], [13, {"type": "exp", "gamma": 1e298}], [30, "fixed"]]}}
    raw["coffee_breaks"] = {"training_summary": {"every": 1}, "snapshot": {"every": 1, "keep": 3}}
    net = tiny_example.with_name("exploding.yaml")
    net.write_text(yaml.safe_dump(raw, sort_keys=False))
    run = tiny_example.parent / "run"
    assert mochapy_run(net, tiny_example.parent, "--max-iter", 11).returncode == 0
    hashes = snapshot_hashes(run)
    assert sorted(hashes) == [f"snapshot-0000000{i}.h5" for i in ("09", "10", "11")]

    line = error_line(mochapy_run(net, tiny_example.parent, "--resume"))

    assert line.startswith("error: training diverged at iteration 12: the update made parameter '")
    assert line.endswith("NaN/Inf; no snapshot written, last good snapshot kept: "
                         "run/snapshots/snapshot-000000011.h5")
    assert snapshot_hashes(run) == hashes  # nothing written over, nothing added, no temp file
    for path in list_snapshots(str(run / "snapshots")):
        assert all(np.isfinite(v).all() for v in read_snapshot(path).params.values())


def test_an_overflowing_gradient_norm_is_named_as_such_not_as_a_nan_in_the_loss(
    tmp_path: Path,
) -> None:
    """Targets of 4e18 and inputs of 1e4: the loss (~1e37) and every gradient (~1e22) are
    finite float32 numbers, but the squared gradient norm the step checks is not."""
    with h5py.File(tmp_path / "train.h5", "w") as handle:
        handle["x"] = np.full((8, 8), 1e4, dtype=np.float32)
        handle["y"] = np.full((8, 1), 4e18, dtype=np.float32)
    raw = {
        "name": "huge", "seed": 0,
        "layers": [
            {"type": "HDF5Data", "name": "data", "source": "train.h5", "batch_size": BATCH,
             "tops": ["x", "y"]},
            {"type": "InnerProduct", "name": "hidden", "bottoms": ["x"], "tops": ["h"],
             "output_dim": 16},
            {"type": "InnerProduct", "name": "out", "bottoms": ["h"], "tops": ["pred"],
             "output_dim": 1},
            {"type": "SquareLoss", "name": "loss", "bottoms": ["pred", "y"]},
        ],
        "solver": {"method": "sgd", "base_lr": 0.01, "max_iter": 5},
    }
    net = tmp_path / "huge.yaml"
    net.write_text(yaml.safe_dump(raw, sort_keys=False))
    line = error_line(mochapy_run(net, tmp_path))
    assert line.startswith("error: training diverged at iteration 1: every loss, gradient and "
                           "parameter is finite, but the squared gradient norm overflows "
                           "float32 (largest gradient ")
    assert "NaN/Inf first in the loss" not in line and line.endswith("no snapshot yet")
