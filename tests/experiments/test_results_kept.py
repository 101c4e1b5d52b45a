"""Nothing lost: every experiment script that writes a result refuses to replace an earlier one,
in one line and before any work, unless given --force."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# script -> (its arguments besides --out, the file of its result)
SCRIPTS = {
    "capacity": ([], "capacity.json"),
    "sd_calibration": (["--run", "results/galaxy_vae_gz_z32"], "sd_calibration.json"),
    "sd_contrast": (["--before", "results/galaxy_vae_z32_wide", "--after", "nowhere"],
                    "sd_contrast.json"),
    "gz_population": (["--n", "5"], "comparison.json"),
    "ivar_check": (["--n", "2", "--draws", "2"], "ivar_check.json"),
    "where_it_loses": (["--run", "results/galaxy_vae_gz_best"], "where_it_loses.json"),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_an_existing_result_is_refused_without_force(name: str, tmp_path: Path) -> None:
    arguments, result = SCRIPTS[name]
    out = tmp_path / "out"
    out.mkdir()
    kept = out / result
    kept.write_text("earlier result")
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / f"{name}.py"), *arguments, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {name}: {out}") and "--force" in done.stderr
    assert done.stderr.count("\n") == 1
    assert kept.read_text() == "earlier result" and [p.name for p in out.iterdir()] == [result]
