"""Two `mochapy run` processes into one --out directory: the second is refused with one line
naming the directory and who holds it (exit 2, nothing touched), and the first finishes exactly
as it would have alone."""

from __future__ import annotations

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

from mochapy.runs import read_weights

SCRIPT = Path(sys.executable).with_name("mochapy")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [
    sys.executable, "-c", "from mochapy.cli import main; main()"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


def start(net: Path, out: str, cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, "run", str(net), "--out", out, "--quiet", *extra],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def outcome(run: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    with h5py.File(run / "statistics.h5", "r") as handle:
        losses = handle["train/loss"][()]
    return read_weights(str(run / "weights.h5")), losses


@pytest.fixture
def slow_net(tiny_example: Path) -> Path:
    """The tiny example, a second or two long (a snapshot every 10 iterations)."""
    raw = yaml.safe_load(tiny_example.read_text())
    raw["solver"]["max_iter"] = 1500
    raw["coffee_breaks"]["snapshot"] = {"every": 10}
    net = tiny_example.with_name("slow.yaml")
    net.write_text(yaml.safe_dump(raw, sort_keys=False))
    return net


def assert_same_outcome(run: Path, alone: Path) -> None:
    weights, losses = outcome(run)
    expected_weights, expected_losses = outcome(alone)
    np.testing.assert_array_equal(losses, expected_losses)
    assert set(weights) == set(expected_weights)
    for key, value in expected_weights.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)


def test_a_second_run_into_a_busy_directory_is_refused_and_the_first_is_unharmed(
    slow_net: Path, tmp_path: Path
) -> None:
    folder = slow_net.parent
    alone = start(slow_net, "alone", folder)
    first = start(slow_net, "shared", folder)
    lock = folder / "shared" / ".lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text().startswith("pid ")):
        assert first.poll() is None and time.monotonic() < deadline, first.stderr
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # paused mid-run, lock held: it cannot finish meanwhile
    try:
        for extra in ((), ("--resume",)):
            line = refusal(finish(start(slow_net, "shared", folder, *extra)))
            assert line.startswith(f"error: run directory shared is in use by pid {first.pid} ")
            assert line.endswith("wait for it or choose another --out")
    finally:
        first.send_signal(signal.SIGCONT)

    assert finish(first).returncode == 0 and finish(alone).returncode == 0
    log = (folder / "shared" / "log.txt").read_text()
    assert log.count("training tiny:") == 1 and "resuming" not in log
    assert_same_outcome(folder / "shared", folder / "alone")


def test_two_runs_started_together_one_trains_and_the_other_is_refused(
    slow_net: Path, tmp_path: Path
) -> None:
    folder = slow_net.parent
    alone = finish(start(slow_net, "alone", folder))
    assert alone.returncode == 0, alone.stderr
    results = [finish(p) for p in [start(slow_net, "shared", folder) for _ in range(2)]]
    winners = [r for r in results if r.returncode == 0]
    losers = [r for r in results if r.returncode != 0]
    assert len(winners) == 1 and len(losers) == 1, [r.stderr for r in results]
    # (the winner may hold the lock but not yet have written its pid into it)
    assert refusal(losers[0]).startswith("error: run directory shared is in use by ")
    assert_same_outcome(folder / "shared", folder / "alone")
