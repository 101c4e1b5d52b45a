"""experiments/sensitivity.py at a tiny budget (tiny data, a few iterations), its plan's checks,
and experiments/learning_curve.py on the tiny run's snapshots."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from mochapy.runs import kept_snapshots

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sensitivity = _script("sensitivity")
learning_curve = _script("learning_curve")


def tiny_plan(tmp_path: Path, variants: list[dict]) -> Path:
    """The shipped plan's recipe and stages at a budget of a few iterations on tiny data."""
    plan = yaml.safe_load((ROOT / "experiments" / "sensitivity.yaml").read_text())
    plan["recipe"] = str(ROOT / "examples" / "galaxy_vae_gz.yaml")
    plan["data"] = {"train": {"n": 24, "seed": 21}, "valid": {"n": 12, "seed": 22},
                    "heldout": {"n": 12, "seed": 23}}
    plan["stages"]["mean"].update({"solver.max_iter": 4, "data.batch_size": 6,
                                   "coffee_breaks.snapshot.every": 2,
                                   "coffee_breaks.snapshot.keep": 10})
    plan["stages"]["sd"].update({"solver.max_iter": 2, "data.batch_size": 6})
    plan["variants"] = variants
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


@pytest.mark.slow
def test_a_tiny_study_trains_evaluates_and_tabulates_each_variant(tmp_path) -> None:
    plan = tiny_plan(tmp_path, [
        {"name": "gz-v1", "factor": "none", "changes": {}},
        {"name": "no-neighbours", "factor": "neighbours", "changes": {"neighbour_rate": 0}},
    ])
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "experiments" / "sensitivity.py"), "--plan", str(plan),
               "--work", "work", "--out", str(out), "--quiet"]  # --work relative to cwd
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "sensitivity.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == ["gz-v1", "no-neighbours"]
    assert all(row["iterations"] == 6 for row in rows)  # 4 mean + 2 sd
    assert rows[1]["settings"]["population"]["neighbour_rate"] == 0
    for row in rows:
        assert 0 <= row["mse_win_fraction"] <= 1 and 0 <= row["likelihood_win_fraction"] <= 1
        assert len(row["mse_model_per_image"]) == len(row["noise_variance_per_image"]) == 12
        assert row["noise_model"] == sensitivity.current_noise_model()
        assert sensitivity.excess_over_noise(row, "mse_baseline_per_image") > -1
    assert "| neighbours | no-neighbours | 6 |" in (out / "sensitivity.md").read_text()
    assert (out / "sensitivity.png").stat().st_size > 0
    assert "2 of the plan's 2 variants recorded." in (out / "sensitivity.md").read_text()
    # each row is recorded on its own; with the work folder gone (a later session), the same
    # command trains nothing and rebuilds the same table from the rows
    recorded = {p.name: p.read_text() for p in (out / "variants").iterdir()}
    assert not list((tmp_path / "work").glob("*/train-*.h5"))  # scratch images dropped
    assert sorted(recorded) == ["gz-v1.json", "no-neighbours.json"]
    shutil.move(tmp_path / "work", tmp_path / "work-kept")
    again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "work").exists()
    assert json.loads((out / "sensitivity.json").read_text())["rows"] == rows
    # a row made under an older noise model shows no excess until --refresh-noise recomputes
    # its noise variances from regenerated held-out images, with no training
    stale = {**rows[0], "noise_model": "ivar-v0",
             "noise_variance_per_image": [1.0] * 12}
    (out / "variants" / "gz-v1.json").write_text(json.dumps(stale))
    shutil.copytree(tmp_path / "work-kept" / "gz-v1", tmp_path / "work" / "gz-v1")
    old_heldout = tmp_path / "work" / "gz-v1" / "heldout-n12-seed23.h5"
    with h5py.File(old_heldout, "r+") as handle:  # as made before ivar was versioned
        del handle.attrs["ivar_version"]
        handle["ivar"][...] *= 2
    again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert "| none | gz-v1 | 6 | " in again.stdout and "\u2014 | \u2014 |" in again.stdout
    again = subprocess.run(command + ["--refresh-noise"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "sensitivity.json").read_text())["rows"] == rows
    shutil.rmtree(tmp_path / "work")
    # a plan with another budget is refused in one line naming the row; nothing is replaced
    changed = yaml.safe_load(plan.read_text())
    changed["stages"]["mean"]["solver.max_iter"] = 5
    plan.write_text(yaml.safe_dump(changed))
    refused = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert refused.returncode != 0 and "pass --force" in refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert str(out / "variants" / "gz-v1.json") in refused.stderr
    assert {p.name: p.read_text() for p in (out / "variants").iterdir()} == recorded
    shutil.move(tmp_path / "work-kept", tmp_path / "work")

    # the learning curve of the first variant's mean stage, from its kept snapshots
    stage = tmp_path / "work" / "gz-v1" / "run" / "stage1-mean"
    assert sorted(kept_snapshots(str(stage))) == [2, 4]
    curve_out = tmp_path / "curve"
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "learning_curve.py"), "--stage", str(stage),
         "--data", str(tmp_path / "work" / "gz-v1" / "heldout-n12-seed23.h5"),
         "--iterations", "2", "4", "--out", str(curve_out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    curve = json.loads((curve_out / "learning_curve.json").read_text())
    assert [p["iteration"] for p in curve["points"]] == [2, 4] and curve["n"] == 12
    assert curve["extrapolation"]["mse_win_fraction"] is None  # two points: no line drawn
    # a later session without the snapshot at 2 keeps its recorded point and measures only 4
    Path(kept_snapshots(str(stage))[2]).unlink()
    (curve_out / "points" / "000000004.json").unlink()
    again = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "learning_curve.py"), "--stage", str(stage),
         "--data", str(tmp_path / "work" / "gz-v1" / "heldout-n12-seed23.h5"),
         "--iterations", "4", "--out", str(curve_out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads((curve_out / "learning_curve.json").read_text())["points"] == curve["points"]
    # points measured on other images are refused in one line, nothing replaced
    other = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "learning_curve.py"), "--stage", str(stage),
         "--data", str(tmp_path / "work" / "gz-v1" / "heldout-n12-seed23.h5"), "--n", "6",
         "--iterations", "4", "--out", str(curve_out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert other.returncode != 0 and "pass --force" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_a_plan_with_an_unknown_field_is_refused_in_one_line(tmp_path) -> None:
    plan = tiny_plan(tmp_path, [{"name": "bad", "factor": "x", "changes": {"neighbours": 0}}])
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "sensitivity.py"),
                           "--plan", str(plan), "--work", str(tmp_path / "w"),
                           "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip() == (f"error: sensitivity: {plan}: variants[0]: gz-v1/bad: unknown "
                                   "population field 'neighbours'")
    assert not (tmp_path / "o").exists()


def test_the_shipped_plan_reads_and_every_variant_changes_its_population() -> None:
    plan = sensitivity.load_plan(str(ROOT / "experiments" / "sensitivity.yaml"))
    base = plan.variants[0].population.describe()
    assert plan.variants[0].name == "gz-v1"
    for variant in plan.variants[1:]:
        assert variant.population.describe() != base, variant.name
    assert {v.factor for v in plan.variants} >= {
        "neighbours", "stars", "mergers and irregulars", "PSF width", "S/N", "bulge-to-disc",
        "arm strength", "morphology mix"}


def test_the_extrapolation_is_a_line_in_log_iterations() -> None:
    points = [{"iteration": i, "mse_win_fraction": w} for i, w in
              ((10_000, 0.5), (100_000, 0.6), (1_000_000, 0.7))]
    assert learning_curve.extrapolate(points, "mse_win_fraction", 10_000_000) == pytest.approx(0.8)
    assert learning_curve.extrapolate(points[:2], "mse_win_fraction", 10**7) is None
    levelled = [{"iteration": i, "mse_win_fraction": w} for i, w in
                ((10_000, 0.5), (20_000, 0.8), (60_000, 0.9), (100_000, 0.9), (180_000, 0.9))]
    assert learning_curve.extrapolate(levelled, "mse_win_fraction", 10**7) == pytest.approx(0.9)
    assert learning_curve.log_grid_iterations([10_000, 20_000, 40_000, 50_000, 300_000]) == [
        10_000, 20_000, 50_000, 300_000]
