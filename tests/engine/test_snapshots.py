"""Snapshots and resume: round trip, damaged snapshots skipped with a warning, and a resumed run
that is bit-identical to an uninterrupted one (parameters and every loss statistic)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mochapy.config import load_config
from mochapy.errors import ConfigError
from mochapy.runs import read_weights
from mochapy.snapshots import (
    BEST_SNAPSHOT,
    Snapshot,
    list_snapshots,
    newest_valid_snapshot,
    prune_snapshots,
    read_snapshot,
    snapshot_path,
    write_snapshot,
)
from mochapy.training import Trainer
from tests.helpers import vae_layer_entries


def example_snapshot(iteration: int) -> Snapshot:
    rng = np.random.default_rng(iteration)
    return Snapshot(
        iteration=iteration,
        params={"enc1.weight": rng.normal(size=(4, 3)).astype(np.float32),
                "enc1.bias": rng.normal(size=3)},
        solver={"m": rng.normal(size=15), "iteration": np.array(iteration)},
        layers={"data": {"position": np.array(7), "order": rng.permutation(10)},
                "eps": {"rng": np.frombuffer(b'{"state": 1}', dtype=np.uint8).copy()}},
        statistics={"train/loss": np.array([[100.0, 1.5], [200.0, 1.25]])},
    )


def assert_same_snapshot(got: Snapshot, want: Snapshot) -> None:
    assert got.iteration == want.iteration
    for group in ("params", "solver", "statistics"):
        mine, theirs = getattr(got, group), getattr(want, group)
        assert set(mine) == set(theirs)
        for key in theirs:
            np.testing.assert_array_equal(mine[key], theirs[key])
            assert mine[key].dtype == np.asarray(theirs[key]).dtype
    assert set(got.layers) == set(want.layers)
    for layer, state in want.layers.items():
        for key, value in state.items():
            np.testing.assert_array_equal(got.layers[layer][key], value)


def test_snapshot_round_trip(tmp_path: Path) -> None:
    snapshot = example_snapshot(300)
    path = snapshot_path(str(tmp_path), 300)
    assert path.endswith("snapshot-000000300.h5")
    write_snapshot(path, snapshot)
    assert_same_snapshot(read_snapshot(path), snapshot)
    assert os.listdir(tmp_path) == ["snapshot-000000300.h5"]  # no temporary file left


def write_three(folder: Path) -> list[str]:
    for iteration in (100, 200, 300):
        write_snapshot(snapshot_path(str(folder), iteration), example_snapshot(iteration))
    return list_snapshots(str(folder))


def truncate(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def flip_array_bytes(path: str) -> None:
    """Flip bytes inside one parameter array's stored data (the file stays valid HDF5)."""
    with h5py.File(path, "r") as handle:
        offset = handle["params/enc1.weight"].id.get_offset()
    with open(path, "r+b") as handle:
        handle.seek(offset + 5)
        byte = handle.read(1)
        handle.seek(offset + 5)
        handle.write(bytes([byte[0] ^ 0xFF]))


def flip_header_bytes(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(0)
        handle.write(b"\x00" * 16)


@pytest.mark.parametrize("damage", [truncate, flip_array_bytes, flip_header_bytes],
                         ids=["truncated", "flipped-data", "flipped-header"])
def test_a_damaged_newest_snapshot_is_skipped_with_a_warning(damage, tmp_path: Path) -> None:
    paths = write_three(tmp_path)
    assert [os.path.basename(p) for p in paths] == [
        "snapshot-000000300.h5", "snapshot-000000200.h5", "snapshot-000000100.h5"]
    damage(paths[0])
    with pytest.warns(UserWarning, match="snapshot-000000300.h5.*skipping it"):
        snapshot = newest_valid_snapshot(str(tmp_path))
    assert_same_snapshot(snapshot, example_snapshot(200))


def test_no_valid_snapshot_gives_none(tmp_path: Path) -> None:
    assert newest_valid_snapshot(str(tmp_path)) is None
    for path in write_three(tmp_path):
        truncate(path)
    with pytest.warns(UserWarning):
        assert newest_valid_snapshot(str(tmp_path)) is None


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    write_three(tmp_path)
    (tmp_path / "notes.h5").write_text("not a snapshot")
    prune_snapshots(str(tmp_path), keep=2)
    assert sorted(os.listdir(tmp_path)) == [
        "notes.h5", "snapshot-000000200.h5", "snapshot-000000300.h5"]


def test_pruning_sets_damaged_snapshots_aside_and_never_deletes_a_good_one_for_them(
    tmp_path: Path,
) -> None:
    """Damaged newest snapshots (say, after a disk error) must not count among the kept three:
    keeping by name would delete each new good snapshot and keep the damaged ones."""
    for iteration in (100, 200, 300, 400, 500):
        write_snapshot(snapshot_path(str(tmp_path), iteration), example_snapshot(iteration))
    truncate(snapshot_path(str(tmp_path), 400))
    flip_array_bytes(snapshot_path(str(tmp_path), 500))
    problems = prune_snapshots(str(tmp_path), keep=3)
    assert len(problems) == 2 and all("set aside as" in p for p in problems)
    assert sorted(os.listdir(tmp_path)) == [
        "snapshot-000000100.h5", "snapshot-000000200.h5", "snapshot-000000300.h5",
        "snapshot-000000400.h5.damaged", "snapshot-000000500.h5.damaged"]
    write_snapshot(snapshot_path(str(tmp_path), 600), example_snapshot(600))
    assert prune_snapshots(str(tmp_path), keep=3) == []
    assert [os.path.basename(p) for p in list_snapshots(str(tmp_path))] == [
        "snapshot-000000600.h5", "snapshot-000000300.h5", "snapshot-000000200.h5"]


def test_a_snapshot_is_taken_for_the_iteration_it_holds_not_its_name(tmp_path: Path) -> None:
    write_three(tmp_path)
    shutil.copyfile(snapshot_path(str(tmp_path), 100), snapshot_path(str(tmp_path), 900))
    damaged: list[str] = []
    snapshot = newest_valid_snapshot(str(tmp_path), damaged)
    assert snapshot.iteration == 300
    assert damaged == [f"snapshot {snapshot_path(str(tmp_path), 900)} holds iteration 100, "
                       "not 900"]


# -- training runs ------------------------------------------------------------------------------
def train(config_path: Path, out: Path, max_iter: int, resume: bool = False):
    trainer = Trainer(load_config(str(config_path)), str(out), max_iter=max_iter, resume=resume,
                      progress=False, echo=lambda line: None)
    return trainer.run()


def final_state(out: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Final parameters (the newest snapshot, full precision) and every statistic but speed."""
    snapshot = read_snapshot(list_snapshots(str(out / "snapshots"))[0])
    with h5py.File(out / "statistics.h5", "r") as handle:
        stats = {}
        handle.visititems(lambda name, node: stats.__setitem__(name, node[()])
                          if isinstance(node, h5py.Dataset) else None)
    stats.pop("train/iters_per_sec")
    return snapshot.params, stats


def assert_identical_runs(a: Path, b: Path) -> None:
    params_a, stats_a = final_state(a)
    params_b, stats_b = final_state(b)
    assert set(params_a) == set(params_b)
    for key in params_a:
        np.testing.assert_array_equal(params_a[key], params_b[key], err_msg=key)
    assert set(stats_a) == set(stats_b)
    for key in stats_a:
        np.testing.assert_array_equal(stats_a[key], stats_b[key], err_msg=key)


def test_resume_is_bit_identical_on_tiny(tiny_example: Path, tmp_path: Path) -> None:
    straight = train(tiny_example, tmp_path / "straight", 2000)
    assert straight.iterations == 2000 and straight.resumed_from is None
    first = train(tiny_example, tmp_path / "halves", 1000)
    assert first.iterations == 1000
    second = train(tiny_example, tmp_path / "halves", 2000, resume=True)
    assert second.resumed_from == 1000 and second.iterations == 2000
    assert_identical_runs(tmp_path / "straight", tmp_path / "halves")
    _, stats = final_state(tmp_path / "halves")
    assert stats["train/loss"].shape == (20, 2) and stats["validation/loss"].shape == (10, 2)
    assert stats["train/loss"][-1, 1] < stats["train/loss"][0, 1] / 10


def small_vae_yaml(folder: Path, **coffee: dict) -> Path:
    """The galaxy VAE's layers at 5x5 pixels and 16 hidden units, on HDF5 files in `folder`;
    `coffee` replaces coffee breaks (the file is named after the replaced ones)."""
    rng = np.random.default_rng(0)
    for name, n in (("train.h5", 40), ("heldout.h5", 20)):
        with h5py.File(folder / name, "w") as handle:
            handle["data"] = rng.gamma(2.0, size=(n, 1, 5, 5)).astype(np.float32)
    layers = vae_layer_entries(pixels=25, hidden=16)
    layers[0] = {"type": "HDF5Data", "name": "data", "source": "train.h5", "batch_size": 10,
                 "shuffle": True, "tops": ["data"]}
    raw = {"name": "small_vae", "seed": 5, "layers": layers,
           "solver": {"method": "adam", "base_lr": 0.003, "regu_coef": 1e-4, "max_iter": 200},
           "coffee_breaks": {"training_summary": {"every": 20}, "snapshot": {"every": 50},
                             "validation": {"every": 40, "source": "heldout.h5"}}}
    raw["coffee_breaks"].update(coffee)
    path = folder / f"small_vae{''.join(f'_{name}' for name in coffee)}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_resume_is_bit_identical_on_the_small_vae(tmp_path: Path) -> None:
    """RandomNormal's stream, the shuffled order, Adam's moments and the validation noise all
    continue exactly across a resume."""
    config = small_vae_yaml(tmp_path)
    train(config, tmp_path / "straight", 200)
    train(config, tmp_path / "halves", 100)
    train(config, tmp_path / "halves", 200, resume=True)
    assert_identical_runs(tmp_path / "straight", tmp_path / "halves")
    _, stats = final_state(tmp_path / "halves")
    assert {"validation/recon", "validation/kl", "validation/loss"} <= set(stats)
    total = stats["validation/recon"][:, 1] + stats["validation/kl"][:, 1]
    np.testing.assert_allclose(stats["validation/loss"][:, 1], total, rtol=1e-12)


def test_keep_best_keeps_the_snapshot_of_the_lowest_validation_loss(tmp_path: Path) -> None:
    """`validation.keep_best`: best-snapshot.h5 holds the state at the lowest validation loss,
    outlives pruning, changes nothing in the training, and a resumed run keeps the same best."""
    validation = {"every": 10, "source": "heldout.h5"}
    every_snapshot = small_vae_yaml(tmp_path, snapshot={"every": 10, "keep": 100},
                                    validation=validation)
    keep_best = small_vae_yaml(tmp_path, validation={**validation, "keep_best": True})
    train(every_snapshot, tmp_path / "all", 200)
    train(keep_best, tmp_path / "best", 200)
    assert_identical_runs(tmp_path / "all", tmp_path / "best")
    assert len(list_snapshots(str(tmp_path / "best" / "snapshots"))) == 3  # pruned as usual
    best = read_snapshot(str(tmp_path / "best" / BEST_SNAPSHOT))
    _, stats = final_state(tmp_path / "best")
    losses = stats["validation/loss"]
    assert best.iteration == int(losses[np.argmin(losses[:, 1]), 0])
    kept = read_snapshot(snapshot_path(str(tmp_path / "all" / "snapshots"), best.iteration))
    for key, value in kept.params.items():
        np.testing.assert_array_equal(best.params[key], value, err_msg=key)
    assert read_weights(str(tmp_path / "best" / BEST_SNAPSHOT)).keys() == best.params.keys()
    train(keep_best, tmp_path / "halves", 100)
    train(keep_best, tmp_path / "halves", 200, resume=True)
    resumed = read_snapshot(str(tmp_path / "halves" / BEST_SNAPSHOT))
    assert resumed.iteration == best.iteration
    for key, value in best.params.items():
        np.testing.assert_array_equal(resumed.params[key], value, err_msg=key)


def test_keep_best_must_be_a_boolean(tmp_path: Path) -> None:
    config = small_vae_yaml(tmp_path, validation={"every": 10, "source": "heldout.h5",
                                                  "keep_best": "yes"})
    with pytest.raises(ConfigError, match=r"coffee_breaks\.validation\.keep_best: must be true"):
        load_config(str(config))


def test_resume_skips_a_damaged_newest_snapshot(tiny_example: Path, tmp_path: Path) -> None:
    train(tiny_example, tmp_path / "straight", 600)
    train(tiny_example, tmp_path / "damaged", 400)
    newest = list_snapshots(str(tmp_path / "damaged" / "snapshots"))[0]
    assert newest.endswith("snapshot-000000400.h5")
    flip_array_bytes_of_any(newest)
    result = train(tiny_example, tmp_path / "damaged", 600, resume=True)
    assert result.resumed_from == 200
    log = (tmp_path / "damaged" / "log.txt").read_text()
    assert "snapshot-000000400.h5 fails its checksum; skipping it" in log
    assert_identical_runs(tmp_path / "straight", tmp_path / "damaged")


def flip_array_bytes_of_any(path: str) -> None:
    with h5py.File(path, "r") as handle:
        offset = handle["params/hidden.weight"].id.get_offset()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x01\x02\x03\x04")


def test_two_runs_with_one_seed_are_identical(tiny_example: Path, tmp_path: Path) -> None:
    train(tiny_example, tmp_path / "a", 400)
    train(tiny_example, tmp_path / "b", 400)
    assert_identical_runs(tmp_path / "a", tmp_path / "b")
    other = tmp_path / "other.yaml"
    other.write_text(tiny_example.read_text().replace("seed: 0", "seed: 1"))
    shutil.copytree(tiny_example.parent / "data", tmp_path / "data")
    train(other, tmp_path / "c", 400)
    _, stats_a = final_state(tmp_path / "a")
    _, stats_c = final_state(tmp_path / "c")
    assert not np.array_equal(stats_a["train/loss"], stats_c["train/loss"])
