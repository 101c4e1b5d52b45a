"""benchmarks/gpu_check.sh, checked as far as a machine without a GPU can: it parses, it runs every
stage (with stand-ins for the interpreter and nvidia-smi that record their command lines) and
writes its summary, the tests it selects exist, and the benchmark's flags parse (under the CUDA
emulation, so that `--backend gpu` is accepted)."""

from __future__ import annotations

import importlib
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
SEPARATOR, END = "\x1f", "\x1e"  # between arguments, after a command (arguments hold newlines)
STUB = f"""#!/usr/bin/env bash
printf '%s{SEPARATOR}' "$(basename "$0")" "$@" >> "$CALLS"
printf '{END}' >> "$CALLS"
echo "3 passed"
"""


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    """The script run with stand-in commands: its output folder and the commands it ran."""
    folder = tmp_path_factory.mktemp("gpu_check")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for name in ("python-stand-in", "nvidia-smi"):
        path = bin_dir / name
        path.write_text(STUB)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    calls = folder / "calls.txt"
    out = folder / "out"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls),
           "OUT": str(out), "PYTHON": str(bin_dir / "python-stand-in")}
    subprocess.run(["bash", str(SCRIPT)], env=env, check=True, capture_output=True, timeout=60)
    records = calls.read_text().split(END)[:-1]
    return out, [record.split(SEPARATOR)[:-1] for record in records]


def test_every_stage_runs_and_is_summarised(dry_run: tuple[Path, list[list[str]]]):
    out, calls = dry_run
    summary = (out / "summary.txt").read_text().splitlines()
    stages = [line.split()[0] for line in summary if " rc=" in line]
    assert stages == ["nvidia-smi", "environment", "gpu-tests", "compile-tests", "benchmark",
                      "sweep"]
    assert all(" rc=0 " in line for line in summary if " rc=" in line), summary
    assert summary[-1].startswith("done")
    assert [call[0] for call in calls] == ["nvidia-smi"] + ["python-stand-in"] * 5


def pytest_calls(calls: list[list[str]]) -> list[list[str]]:
    return [call[3:] for call in calls if call[1:3] == ["-m", "pytest"]]


def test_the_test_stages_run_every_gpu_test_and_the_compile_tests(
    dry_run: tuple[Path, list[list[str]]],
):
    _, calls = dry_run
    gpu_tests, compile_tests = pytest_calls(calls)
    assert gpu_tests[gpu_tests.index("-m") + 1] == "gpu" and gpu_tests[-1] == "tests"
    assert "gpu:" in (REPO / "pyproject.toml").read_text()  # the marker is declared
    assert compile_tests[-1] == "tests/gpu/test_kernels_compile.py"
    assert (REPO / compile_tests[-1]).is_file()


def test_the_environment_probe_compiles(dry_run: tuple[Path, list[list[str]]]):
    _, calls = dry_run
    probe = next(call for call in calls if call[1:2] == ["-c"])
    compile(probe[2], "gpu_check.sh environment stage", "exec")


def test_the_benchmark_flags_parse(dry_run: tuple[Path, list[list[str]]], cuda_emulator: Any):
    out, calls = dry_run
    benchmarks = [call[2:] for call in calls if call[1:2] == ["benchmarks/iters_per_sec.py"]]
    assert len(benchmarks) == 2
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        iters_per_sec = importlib.import_module("iters_per_sec")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    with cuda_emulator.installed():
        parsed = [iters_per_sec.parse_args(arguments) for arguments in benchmarks]
    assert [args.backend for args in parsed] == ["gpu", "gpu"]
    assert [args.sweep for args in parsed] == [False, True]
    assert all(args.json.parent == out for args in parsed)
