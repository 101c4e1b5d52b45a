"""`mochapy run` and `mochapy check` end to end, as a user runs them (a subprocess in tmp_path):
user errors are one line on stderr with exit code 2 and no traceback, and leave no half-made
run directory behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mochapy.backends import gpu_available
from mochapy.run_directory import recorded_blob_shapes
from mochapy.snapshots import list_snapshots, read_snapshot
from tests.helpers import EXAMPLES

SCRIPT = Path(sys.executable).with_name("mochapy")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "from mochapy.cli import main; main()"]


def mochapy(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "default"})


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_run_writes_a_complete_run_directory(tiny_example: Path, tmp_path: Path) -> None:
    result = mochapy("run", tiny_example, "--out", "run", "--max-iter", 400, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "trained 400 iterations" in result.stdout
    run = tmp_path / "run"
    assert {"net.yaml", "snapshots", "statistics.h5", "weights.h5", "training.json",
            "log.txt"} <= set(os.listdir(run))
    assert [Path(p).name for p in list_snapshots(str(run / "snapshots"))] == [
        "snapshot-000000400.h5", "snapshot-000000200.h5"]
    assert not [p for p in run.rglob("*") if "partial" in p.name]
    with h5py.File(run / "weights.h5", "r") as handle:
        assert handle["params/hidden.weight"].shape == (8, 16)
        assert handle["params/hidden.weight"].dtype == np.float32
    # each blob's shape per row, so the run's users need not infer sizes from weights
    shapes = json.loads((run / "training.json").read_text())["blob_shapes"]
    assert shapes == {"x": [8], "y": [1], "h": [16], "pred": [1]}
    assert recorded_blob_shapes(str(run)) == {"x": (8,), "y": (1,), "h": (16,), "pred": (1,)}


def test_run_defaults_to_runs_name_and_resume_continues(tiny_example: Path,
                                                         tmp_path: Path) -> None:
    first = mochapy("run", tiny_example, "--max-iter", 200, "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "tiny"
    assert list_snapshots(str(run / "snapshots"))
    resumed = mochapy("run", tiny_example, "--out", run, "--resume", "--max-iter", 400,
                      "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming tiny from iteration 200" in resumed.stdout
    assert "trained 400 iterations" in resumed.stdout
    assert read_snapshot(list_snapshots(str(run / "snapshots"))[0]).iteration == 400


def test_two_cli_runs_with_one_seed_give_identical_losses(tiny_example: Path,
                                                          tmp_path: Path) -> None:
    for out in ("a", "b"):
        assert mochapy("run", tiny_example, "--out", out, "--max-iter", 300,
                       cwd=tmp_path).returncode == 0
    series = []
    for out in ("a", "b"):
        with h5py.File(tmp_path / out / "statistics.h5", "r") as handle:
            series.append((handle["train/loss"][()], handle["validation/loss"][()]))
    for got, want in zip(series[0], series[1], strict=True):
        np.testing.assert_array_equal(got, want)


def test_init_from_partial_keeps_the_added_layers_initial_values(tiny_example: Path,
                                                                 tmp_path: Path) -> None:
    assert mochapy("run", tiny_example, "--out", "base", "--max-iter", 200, "--quiet",
                   cwd=tmp_path).returncode == 0
    child = {
        "extends": str(tiny_example), "init_from": "base",
        "add_layers": [
            {"type": "InnerProduct", "name": "side", "bottoms": ["x"], "tops": ["side"],
             "output_dim": 1, "weight_init": {"type": "Constant", "value": 0}},
            {"type": "ElementWise", "name": "total", "bottoms": ["main", "side"],
             "tops": ["pred"]},
        ],
        "set": {"out.tops": ["main"], "solver.max_iter": 1, "solver.base_lr": 1e-12},
    }
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(child))
    strict = mochapy("run", "child.yaml", "--out", "strict", cwd=tmp_path)
    assert_user_error(strict, "init_from", "no values for parameter 'side.bias'")
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({**child, "init_from_partial": True}))
    partial = mochapy("run", "child.yaml", "--out", "partial", cwd=tmp_path)
    assert partial.returncode == 0, partial.stderr
    log = (tmp_path / "partial" / "log.txt").read_text()
    assert "initialised as declared: side.bias, side.weight" in log
    with h5py.File(tmp_path / "base" / "weights.h5") as base, \
            h5py.File(tmp_path / "partial" / "weights.h5") as grown:
        np.testing.assert_allclose(grown["params/hidden.weight"][()],
                                   base["params/hidden.weight"][()], atol=1e-9)
        np.testing.assert_allclose(grown["params/side.weight"][()], 0, atol=1e-9)


def test_a_run_directory_moved_with_what_it_names_still_runs(tiny_example: Path,
                                                            tmp_path: Path) -> None:
    example = tiny_example.parent
    assert mochapy("run", "tiny.yaml", "--out", "base", "--max-iter", 200, "--quiet",
                   cwd=example).returncode == 0
    (example / "child.yaml").write_text(yaml.safe_dump({
        "extends": "tiny.yaml", "init_from": "base", "set": {"solver.max_iter": 1}}))
    assert mochapy("run", "child.yaml", "--out", "child", "--quiet", cwd=example).returncode == 0
    copy = yaml.safe_load((example / "child" / "net.yaml").read_text())
    assert copy["init_from"] == "../base"
    assert not [path for path in (layer.get("source") for layer in copy["layers"])
                if path and os.path.isabs(path)]
    moved = example.rename(tmp_path / "moved")
    again = mochapy("run", "child/net.yaml", "--out", "again", "--quiet", cwd=moved)
    assert again.returncode == 0, again.stderr
    log = (moved / "again" / "log.txt").read_text()
    assert f"parameters initialised from {moved / 'base'}" in log


def test_run_refuses_a_directory_holding_a_run(tiny_example: Path, tmp_path: Path) -> None:
    assert mochapy("run", tiny_example, "--out", "run", "--max-iter", 200,
                   cwd=tmp_path).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "snapshots").iterdir()}
    result = mochapy("run", tiny_example, "--out", "run", "--max-iter", 400, cwd=tmp_path)
    assert_user_error(result, "already holds a run", "--resume")
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "snapshots").iterdir()}
    assert after == before


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("layers: [\n  {type: HDF5Data, name: data\n", "line 3"),
     ("layers:\n  - {type: Nope, name: x}\n", "unknown layer type 'Nope'"),
     ("layers:\n  - {type: HDF5Data, name: data, source: gone.h5, batch_size: 2, tops: [x]}\n"
      "  - {type: InnerProduct, name: ip, bottoms: [x], tops: [y], output_dim: 2}\n",
      "gone.h5")],
    ids=["syntax", "unknown-type", "missing-data"],
)
def test_a_bad_net_file_leaves_no_run_directory(text, fragment, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = mochapy("run", bad, "--out", "run", cwd=tmp_path)
    assert_user_error(result, fragment)
    assert not (tmp_path / "run").exists()
    assert_user_error(mochapy("check", bad, cwd=tmp_path), fragment)


def test_a_bad_validation_source_fails_before_training(tiny_example: Path,
                                                      tmp_path: Path) -> None:
    broken = tiny_example.with_name("broken.yaml")
    broken.write_text(tiny_example.read_text().replace("data/tiny_test.h5", "data/typo.h5"))
    result = mochapy("run", broken, "--out", "run", cwd=tmp_path)
    assert_user_error(result, "typo.h5")
    assert not (tmp_path / "run").exists()


def test_divergence_names_iteration_and_layer_and_keeps_the_last_snapshot(
    tiny_example: Path, tmp_path: Path
) -> None:
    raw = yaml.safe_load(tiny_example.read_text())
    raw["solver"] = {"method": "sgd", "base_lr": 0.01, "momentum": 0.9,
                     "lr_policy": {"type": "staged",  # a warm-up that grows far too fast
                                   "stages": [[400, {"type": "exp", "gamma": 1.5}],
                                              [500, "fixed"]]},
                     "max_iter": 500}
    raw["coffee_breaks"] = {"training_summary": {"every": 5}, "snapshot": {"every": 5}}
    diverging = tiny_example.with_name("diverging.yaml")
    diverging.write_text(yaml.safe_dump(raw))
    result = mochapy("run", diverging, "--out", "run", cwd=tmp_path)
    line = assert_user_error(result, "training diverged at iteration", "layer '",
                             "last good snapshot kept")
    iteration = int(line.split("at iteration ")[1].split(":")[0])
    kept = line.rsplit("kept: ", 1)[1]
    assert 5 < iteration < 500
    snapshot = read_snapshot(str(tmp_path / kept))
    assert iteration - 5 <= snapshot.iteration < iteration
    assert all(np.isfinite(v).all() for v in snapshot.params.values())


def test_check_prints_layers_shapes_and_parameter_count(tiny_example: Path,
                                                        tmp_path: Path) -> None:
    result = mochapy("check", tiny_example, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hidden  InnerProduct  h[32, 16]" in result.stdout
    assert "parameters: 161" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_check_counts_the_poster_vae_parameters(tmp_path: Path) -> None:
    """examples/galaxy_vae_poster.yaml, its data layers pointed at a small (N, 1, 69, 69) file
    (one batch: a batch larger than the data is refused)."""
    with h5py.File(tmp_path / "galaxies.h5", "w") as handle:
        handle["data"] = np.random.default_rng(0).random((100, 1, 69, 69), dtype=np.float32)
    raw = yaml.safe_load((EXAMPLES / "galaxy_vae_poster.yaml").read_text())
    raw["layers"][0]["source"] = "galaxies.h5"
    raw["coffee_breaks"]["validation"]["source"] = "galaxies.h5"
    net = tmp_path / "galaxy_vae.yaml"
    net.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = mochapy("check", net, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "parameters: 1,874,114" in result.stdout
    assert "x_sigma" in result.stdout and "data[100, 1, 69, 69]" in result.stdout


@pytest.mark.skipif(gpu_available(), reason="a GPU is present here")
def test_asking_for_a_missing_gpu_is_one_line(tiny_example: Path, tmp_path: Path) -> None:
    result = mochapy("run", tiny_example, "--backend", "gpu", "--out", "run", cwd=tmp_path)
    assert_user_error(result, "backend 'gpu'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_snapshot_and_the_lock_guards_the_run(
    signal_number, tiny_example: Path, tmp_path: Path
) -> None:
    """The iteration under way finishes (an update is never cut in half), then it snapshots."""
    words = f"stopped by {signal.Signals(signal_number).name}"
    raw = yaml.safe_load(tiny_example.read_text())
    raw["coffee_breaks"]["snapshot"] = {"every": 100}
    endless = tiny_example.with_name("endless.yaml")
    endless.write_text(yaml.safe_dump(raw))
    process = subprocess.Popen([*COMMAND, "run", str(endless), "--out", "run", "--max-iter",
                                str(10**8)], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list_snapshots(str(tmp_path / "run" / "snapshots")):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.05)
        busy = mochapy("run", endless, "--out", "run", "--resume", cwd=tmp_path)
        assert_user_error(busy, "is in use by pid")
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 2, stderr
    line = assert_user_error(subprocess.CompletedProcess([], 2, "", stderr), words, "saved")
    iteration = int(line.split("iteration ")[1].split(";")[0])
    assert read_snapshot(list_snapshots(str(tmp_path / "run" / "snapshots"))[0]).iteration == (
        iteration)
    resumed = mochapy("run", endless, "--out", "run", "--resume", "--max-iter", iteration + 50,
                      "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming tiny from iteration {iteration}" in resumed.stdout
