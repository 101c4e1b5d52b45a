"""The output policy (mochapy.outputs) on its own: what every command relies on before it
writes. The commands that use it are tried through their command lines in reliability_table.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import h5py
import pytest
import yaml

from mochapy.outputs import OutputError, atomic_directory, claim_output, claim_output_dir
from tools.reliability_table import GALAXY_MODEL, MOCHAPY


def test_an_existing_output_needs_force_and_an_input_is_refused_even_with_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data.h5"
    data.write_bytes(b"images")
    link = tmp_path / "link.h5"
    link.symlink_to(data)
    hard = tmp_path / "hard.h5"
    os.link(data, hard)
    claim_output(str(tmp_path / "new.h5"), [str(data)])
    with pytest.raises(OutputError, match="exists; pass --force"):
        claim_output(str(data))
    claim_output(str(data), force=True)
    for alias in (data, link, hard, tmp_path / "sub" / ".." / "data.h5"):
        with pytest.raises(OutputError, match="is one of this command's inputs"):
            claim_output(str(alias), [str(data)], force=True)
    with pytest.raises(OutputError, match="is a folder"):
        claim_output(str(tmp_path), force=True)


def test_an_output_folder_must_be_new_or_empty_unless_forced(tmp_path: Path) -> None:
    claim_output_dir(str(tmp_path / "new"))
    claim_output_dir(str(tmp_path))  # empty
    (tmp_path / "old.png").write_bytes(b"old")
    with pytest.raises(OutputError, match="not empty; pass --force"):
        claim_output_dir(str(tmp_path))
    claim_output_dir(str(tmp_path), force=True)


def test_an_atomic_directory_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "figs"
    with pytest.raises(RuntimeError), atomic_directory(str(out)) as staging:
        Path(staging, "a.png").write_bytes(b"a")
        raise RuntimeError("the second figure failed")
    assert os.listdir(tmp_path) == []
    with atomic_directory(str(out)) as staging:
        Path(staging, "a.png").write_bytes(b"a")
        Path(staging, "b.png").write_bytes(b"b")
    assert sorted(os.listdir(out)) == ["a.png", "b.png"] and os.listdir(tmp_path) == ["figs"]
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError), atomic_directory(str(out), force=True) as staging:
        Path(staging, "a.png").write_bytes(b"new a")
        raise RuntimeError("failed")
    assert (out / "a.png").read_bytes() == b"a"
    with atomic_directory(str(out), force=True) as staging:
        Path(staging, "a.png").write_bytes(b"new a")
    assert (out / "a.png").read_bytes() == b"new a" and (out / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputError, match="inputs"), atomic_directory(
        str(out), [str(out / "keep.txt")], force=True
    ) as staging:
        Path(staging, "keep.txt").write_text("replaced")
    assert (out / "keep.txt").read_text() == "mine" and os.listdir(tmp_path) == ["figs"]


# -- the policy through the command lines: what the flags allow -----------------------------------
def cli(program: list[str], *args: object, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*program, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1",
                                            "MPLBACKEND": "Agg", **env})


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def short_run(tiny_example: Path, **solver: object) -> Path:
    """tiny.yaml, 20 iterations with a snapshot every 10, plus solver changes."""
    raw = yaml.safe_load(tiny_example.read_text())
    raw["solver"].update({"max_iter": 20, **solver})
    raw["coffee_breaks"] = {"training_summary": {"every": 10}, "snapshot": {"every": 10}}
    net = tiny_example.with_name(f"short{len(solver)}.yaml")
    net.write_text(yaml.safe_dump(raw, sort_keys=False))
    return net


def test_resume_with_allow_changed_goes_on_and_training_json_records_what_changed(
    tiny_example: Path, tmp_path: Path
) -> None:
    succeeded(cli(MOCHAPY, "run", short_run(tiny_example), "--out", "run", cwd=tmp_path))
    changed = short_run(tiny_example, base_lr=0.005, max_iter=30)
    refused = cli(MOCHAPY, "run", changed, "--out", "run", "--resume", cwd=tmp_path)
    assert refused.returncode == 2 and "solver.base_lr: 0.01 -> 0.005" in refused.stderr
    result = succeeded(cli(MOCHAPY, "run", changed, "--out", "run", "--resume",
                           "--allow-changed", cwd=tmp_path))
    assert "resuming tiny from iteration 20" in result.stdout
    info = json.loads((tmp_path / "run" / "training.json").read_text())
    assert info["iterations"] == 30
    assert info["resumed_with_changes"] == [
        {"from_iteration": 20, "changes": ["solver.base_lr: 0.01 -> 0.005"]}]
    assert "base_lr: 0.005" in (tmp_path / "run" / "net.yaml").read_text()  # the net it now is
    usage = cli(MOCHAPY, "run", changed, "--out", "other", "--allow-changed", cwd=tmp_path)
    assert usage.returncode == 2 and "--allow-changed goes with --resume" in usage.stderr


def test_resuming_from_the_runs_own_net_file_never_rewrites_it(
    tiny_example: Path, tmp_path: Path
) -> None:
    """The user edits RUN/net.yaml by hand (a comment, a longer run) and resumes from it."""
    succeeded(cli(MOCHAPY, "run", short_run(tiny_example), "--out", "run", cwd=tmp_path))
    net = tmp_path / "run" / "net.yaml"
    edited = "# my notes: ten more iterations\n" + net.read_text().replace(
        "max_iter: 20", "max_iter: 30")
    net.write_text(edited)
    succeeded(cli(MOCHAPY, "run", net, "--out", "run", "--resume", cwd=tmp_path))
    assert net.read_text() == edited
    assert json.loads((tmp_path / "run" / "training.json").read_text())["iterations"] == 30


def test_a_damaged_snapshot_is_set_aside_and_reported_on_resume(
    tiny_example: Path, tmp_path: Path
) -> None:
    succeeded(cli(MOCHAPY, "run", short_run(tiny_example), "--out", "run", cwd=tmp_path))
    snapshots = tmp_path / "run" / "snapshots"
    newest = snapshots / "snapshot-000000020.h5"
    newest.write_bytes(newest.read_bytes()[:1000])
    longer = short_run(tiny_example, max_iter=40)
    result = succeeded(cli(MOCHAPY, "run", longer, "--out", "run", "--resume", cwd=tmp_path))
    assert "resuming tiny from iteration 10" in result.stdout
    assert "skipping it, set aside as snapshot-000000020.h5.damaged" in result.stdout
    # the damaged file stays for inspection; the three kept are good ones
    assert sorted(p.name for p in snapshots.iterdir()) == [
        "snapshot-000000020.h5", "snapshot-000000020.h5.damaged", "snapshot-000000030.h5",
        "snapshot-000000040.h5"]


def test_hdf5_output_lands_beside_its_yaml_whole_and_check_writes_nothing(
    tiny_example: Path, tmp_path: Path
) -> None:
    raw = yaml.safe_load(tiny_example.read_text())
    raw["layers"].append({"type": "HDF5Output", "name": "save", "bottoms": ["pred"],
                          "filename": "predictions.h5"})
    raw["solver"]["max_iter"] = 5
    raw["coffee_breaks"]["validation"]["every"] = 2  # the validation net has the layer too
    net = tiny_example.with_name("with_output.yaml")
    net.write_text(yaml.safe_dump(raw, sort_keys=False))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = sorted(os.listdir(net.parent))
    succeeded(cli(MOCHAPY, "check", net, cwd=elsewhere))
    assert sorted(os.listdir(net.parent)) == before and os.listdir(elsewhere) == []
    succeeded(cli(MOCHAPY, "run", net, "--out", tmp_path / "run", cwd=elsewhere))
    with h5py.File(net.parent / "predictions.h5", "r") as handle:
        assert handle["pred"].shape == (5 * 32, 1)
    assert sorted(os.listdir(net.parent)) == sorted([*before, "predictions.h5"])
    assert os.listdir(elsewhere) == []


def test_force_replaces_an_output_and_figures_force_keeps_other_files(tmp_path: Path) -> None:
    from tools.reliability_table import build_assets, galaxy_images, write_h5

    assets = build_assets(tmp_path / "assets")
    env = {"GALAXY_MODEL_CACHE": str(assets / "cache")}
    run = assets / "vae_run"
    (tmp_path / "z.h5").write_bytes(b"old")
    succeeded(cli(GALAXY_MODEL, "encode", "--run", run, "--data", assets / "galaxies.h5",
                  "--out", "z.h5", "--force", cwd=tmp_path, **env))
    with h5py.File(tmp_path / "z.h5", "r") as handle:
        assert len(handle["mean"]) == 12
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "notes.txt").write_text("mine")
    succeeded(cli(GALAXY_MODEL, "figures", "--run", run, "--data", assets / "galaxies.h5",
                  "--out", "figs", "--force", cwd=tmp_path, **env))
    assert (tmp_path / "figs" / "notes.txt").read_text() == "mine"
    assert {"conditionals.png", "tsne.png", "traversals.png"} <= set(os.listdir(tmp_path / "figs"))
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".partial")]
    for count in (1, 3):  # fewer images than the four quartiles of the summary
        write_h5(tmp_path / f"few{count}.h5", data=galaxy_images(count))
        result = succeeded(cli(GALAXY_MODEL, "evaluate", "--run", run, "--data",
                               f"few{count}.h5", "--json", f"few{count}.json", cwd=tmp_path,
                               **env))
        assert "Traceback" not in result.stderr
        summary = json.loads((tmp_path / f"few{count}.json").read_text())
        assert sum(row["n_images"] for row in summary["by_baseline_misfit"]) == count
