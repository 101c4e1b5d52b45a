"""Crash safety of `mochapy run`: a real run killed with SIGKILL at random moments (one of them
in the middle of writing a snapshot), then `mochapy run --resume`, ends bit-identical to a run
that was never interrupted; a damaged newest snapshot is skipped with a warning; no half-written
temporary file survives the resume."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mochapy.snapshots import list_snapshots, read_snapshot

SCRIPT = Path(sys.executable).with_name("mochapy")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "from mochapy.cli import main; main()"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAX_ITER = 100
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


def mochapy_run(net: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, "run", str(net), "--out", str(out), "--quiet", *extra],
                          capture_output=True, text=True, timeout=120, env=ENV)


@pytest.fixture(scope="module")
def crash_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/tiny.yaml snapshotting every iteration (so most of the time goes to writing
    snapshots, and a kill often lands in one), with summaries and validation out of step with
    the snapshots (so the statistics must survive a resume between two summaries)."""
    folder = tmp_path_factory.mktemp("crash")
    shutil.copytree(EXAMPLES / "data", folder / "data")
    raw = yaml.safe_load((EXAMPLES / "tiny.yaml").read_text())
    raw["solver"]["max_iter"] = MAX_ITER
    raw["coffee_breaks"] = {"training_summary": {"every": 7},
                            "validation": {"every": 25, "source": "data/tiny_test.h5"},
                            "snapshot": {"every": 1, "keep": 3}}
    net = folder / "crash.yaml"
    net.write_text(yaml.safe_dump(raw, sort_keys=False))
    straight = mochapy_run(net, folder / "straight")
    assert straight.returncode == 0, straight.stderr
    return net


def final_state(run: Path) -> dict[str, np.ndarray]:
    """Newest snapshot's parameters and solver state, weights.h5, and every statistic but the
    speed: everything that must not depend on whether the run was interrupted."""
    snapshot = read_snapshot(list_snapshots(str(run / "snapshots"))[0])
    state = {f"snapshot/params/{k}": v for k, v in snapshot.params.items()}
    state.update({f"snapshot/solver/{k}": v for k, v in snapshot.solver.items()})
    for name in ("weights.h5", "statistics.h5"):
        with h5py.File(run / name, "r") as handle:
            handle.visititems(lambda key, node, name=name: state.__setitem__(f"{name}/{key}",
                                                                            node[()])
                              if isinstance(node, h5py.Dataset) else None)
    return {k: v for k, v in state.items() if "iters_per_sec" not in k}


def kill_when(process: subprocess.Popen, snapshots: Path, ready) -> list[str]:
    """SIGKILL `process` as soon as `ready(names in snapshots/)` holds; returns those names."""
    deadline = time.monotonic() + 60
    while True:
        names = os.listdir(snapshots) if snapshots.is_dir() else []
        if ready(names):
            process.kill()
            process.wait()
            return names
        assert process.poll() is None, "the run ended before the moment chosen to kill it"
        assert time.monotonic() < deadline
        time.sleep(0.0005)


def newest_iteration(names: list[str]) -> int:
    return max((int(n[9:18]) for n in names if n.startswith("snapshot-")), default=0)


def truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def flip_bytes(path: Path) -> None:
    """Flip bytes inside a parameter array: the file stays valid HDF5, its checksum fails."""
    with h5py.File(path, "r") as handle:
        offset = handle["params/hidden.weight"].id.get_offset()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        data = handle.read(8)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in data))


@pytest.mark.parametrize(
    ("moment", "damage"),
    [(0, None), (1, truncate), (2, flip_bytes), ("mid-snapshot-write", None)],
    ids=["seed0", "seed1-newest-truncated", "seed2-newest-bytes-flipped", "mid-snapshot-write"],
)
def test_kill_9_then_resume_is_bit_identical_to_an_uninterrupted_run(
    moment, damage, crash_net: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    snapshots = run / "snapshots"
    process = subprocess.Popen([*COMMAND, "run", str(crash_net), "--out", str(run), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        if moment == "mid-snapshot-write":
            # a temporary snapshot file exists: the kill lands between creating and renaming it
            names = kill_when(process, snapshots, lambda names: newest_iteration(names) >= 10
                              and any(n.startswith(".partial-") for n in names))
            assert [n for n in os.listdir(snapshots) if n.startswith(".partial-")], names
        else:
            rng = np.random.default_rng(moment)
            target = int(rng.integers(5, MAX_ITER - 10))
            names = kill_when(process, snapshots, lambda names: newest_iteration(names) >= target)
            time.sleep(rng.uniform(0, 0.03))  # a random moment after that snapshot appeared
    finally:
        process.kill()
    valid = list_snapshots(str(snapshots))
    assert valid and newest_iteration(os.listdir(snapshots)) < MAX_ITER
    expected_start = read_snapshot(valid[0]).iteration
    if damage:
        damage(Path(valid[0]))
        expected_start = read_snapshot(valid[1]).iteration

    resumed = mochapy_run(crash_net, run, "--resume")

    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming tiny from iteration {expected_start}" in resumed.stdout
    if damage:
        assert f"warning: snapshot {valid[0]}" in resumed.stdout
        assert "skipping it" in resumed.stdout
    assert not [p for p in run.rglob("*") if p.name.startswith(".partial")]
    straight, interrupted = final_state(crash_net.parent / "straight"), final_state(run)
    assert set(straight) == set(interrupted)
    for key, value in straight.items():
        np.testing.assert_array_equal(interrupted[key], value, err_msg=key)
