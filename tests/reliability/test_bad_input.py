"""Bad input tried on purpose through the real command lines (the cases live in
tools/reliability_table.py, which also prints them as the README's table), and a disk that fills
up in the middle of a run or of a dataset write (ENOSPC injected in-process)."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import mochapy.atomic
from galaxy_model.dataset import GalaxyDataset, read_dataset, write_dataset
from mochapy.config import load_config
from mochapy.runs import read_weights
from mochapy.snapshots import list_snapshots, read_snapshot
from mochapy.training import Trainer
from tools.reliability_table import (
    CASES,
    MOCHAPY,
    OTHER_FAULTS,
    _cell,
    build_assets,
    run_case,
    run_cases,
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def observations(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every case, run once, a few at a time (each test below reads its own)."""
    return run_cases(CASES, assets, tmp_path_factory.mktemp("cases"))


def test_the_cases_are_many_and_distinct() -> None:
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)
    assert all(case["expect"] and case["fault"] for case in CASES)


def test_the_docs_count_every_case() -> None:
    """docs/reliability.md holds the tables as last generated: every case and fault, counted
    (regenerate with `python tools/reliability_table.py --write docs/reliability.md`)."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    assert f"{len(OTHER_FAULTS)} faults tried by their own tests:" in docs
    assert f"\n{len(CASES)} malformed, oversized or dangerous inputs and outputs" in docs
    missing = [case["id"] for case in CASES if f"| {_cell(case['fault'])} |" not in docs]
    missing += [fault for fault, _, _ in OTHER_FAULTS if f"| {_cell(fault)} |" not in docs]
    assert not missing, f"not in docs/reliability.md: {missing}"


@pytest.mark.parametrize("case_id", [case["id"] for case in CASES])
def test_bad_input_is_one_error_line_exit_2_and_leaves_nothing_behind(
    case_id: str, observations: dict
) -> None:
    observation = observations[case_id]
    if observation.skipped:
        pytest.skip(observation.skipped)
    assert observation.problems() == [], (observation.stderr, observation.stdout)


def test_the_checks_catch_a_command_that_does_not_fail(assets: Path, tmp_path: Path) -> None:
    """A good net given to `mochapy check` breaks the promise of a bad-input case: exit 0."""
    good = {"id": "good", "fault": "none", "expect": "error",
            "setup": None, "command": [*MOCHAPY, "check", str(assets / "example" / "tiny.yaml")]}
    problems = run_case(good, assets, tmp_path).problems()
    assert "exit code 0" in problems and any("not one `error:` line" in p for p in problems)


# -- disk full in-process -----------------------------------------------------------------------
def filling_disk(monkeypatch: pytest.MonkeyPatch, writes_that_fit: int, where: str) -> list[str]:
    """From the (writes_that_fit + 1)-th HDF5 file written atomically under a path containing
    `where`, the write fails half-way with ENOSPC, as on a full disk. Returns the files hit."""
    real_file = h5py.File
    hit: list[str] = []
    count = [0]

    def file(path, mode="r", *args, **kwargs):
        handle = real_file(path, mode, *args, **kwargs)
        if mode == "w" and where in str(path):
            count[0] += 1
            if count[0] > writes_that_fit:
                handle.create_dataset("half-written", data=np.zeros(1000))
                handle.close()
                hit.append(str(path))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return handle

    monkeypatch.setattr(mochapy.atomic.h5py, "File", file)
    return hit


def train(config: Path, out: Path, max_iter: int, resume: bool = False) -> None:
    Trainer(load_config(str(config)), str(out), max_iter=max_iter, resume=resume, progress=False,
            echo=lambda line: None).run()


def test_disk_full_during_a_snapshot_keeps_the_others_and_resume_is_identical(
    tiny_example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(tiny_example, tmp_path / "straight", 600)
    run = tmp_path / "run"
    hit = filling_disk(monkeypatch, writes_that_fit=1, where="snapshots")
    with pytest.raises(OSError) as info:
        train(tiny_example, run, 600)
    assert info.value.errno == errno.ENOSPC and hit
    assert info.value.filename == str(run / "snapshots" / "snapshot-000000400.h5")
    assert not [p for p in run.rglob("*") if "partial" in p.name]
    assert [read_snapshot(p).iteration for p in list_snapshots(str(run / "snapshots"))] == [200]
    monkeypatch.undo()  # space is freed; the run goes on from the snapshot that was written
    train(tiny_example, run, 600, resume=True)
    expected = read_weights(str(tmp_path / "straight" / "weights.h5"))
    got = read_weights(str(run / "weights.h5"))
    assert set(got) == set(expected)
    assert all(np.array_equal(got[key], expected[key]) for key in expected)


def test_disk_full_while_rewriting_a_dataset_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    dataset = GalaxyDataset(data=rng.random((3, 1, 8, 8), dtype=np.float32),
                            scale=np.ones(3, np.float32), offset=np.zeros((3, 1), np.float32),
                            provenance=["a", "b", "c"])
    path = tmp_path / "galaxies.h5"
    write_dataset(path, dataset)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    filling_disk(monkeypatch, writes_that_fit=0, where=str(tmp_path))
    with pytest.raises(OSError) as info:
        write_dataset(path, dataset.subset(slice(0, 2)))
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(path))
    assert os.listdir(tmp_path) == ["galaxies.h5"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    monkeypatch.undo()
    assert len(read_dataset(path)) == 3
