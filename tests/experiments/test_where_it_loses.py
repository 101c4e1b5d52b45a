"""experiments/where_it_loses.py: its groups of scenes, its rows, and the command on tiny data."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from galaxy_model.populations import GZ_V1, MORPHOLOGIES
from galaxy_model.synth.generate import scene_parameters
from mochapy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "where_it_loses.py"
spec = importlib.util.spec_from_file_location("where_it_loses", SCRIPT)
where_it_loses = importlib.util.module_from_spec(spec)
spec.loader.exec_module(where_it_loses)


def test_each_property_splits_the_images_into_disjoint_groups() -> None:
    groups = list(where_it_loses.scene_groups("builtin:gz-heldout", 60))
    by_property: dict[str, list[np.ndarray]] = {}
    for prop, _, chosen in groups:
        by_property.setdefault(prop, []).append(chosen)
    assert len(by_property) == 5
    for masks in by_property.values():
        assert (np.sum(masks, axis=0) == 1).all()  # every image in exactly one group
    morphology = dict((group, chosen) for prop, group, chosen in groups if prop == "morphology")
    drawn = scene_parameters(60, seed=13, population=GZ_V1)["morphology"]
    assert (morphology["spiral"] == (drawn == MORPHOLOGIES.index("spiral"))).all()
    thirds = [chosen.sum() for prop, _, chosen in groups if prop == "S/N"]
    assert thirds == [20, 20, 20]


def test_real_galaxies_have_no_drawn_properties() -> None:
    with pytest.raises(ConfigError, match="only a built-in synthetic split"):
        list(where_it_loses.scene_groups("builtin:real", 5))


def test_rows_are_the_win_fractions_of_each_group() -> None:
    evaluation = SimpleNamespace(mse_win=np.array([1, 0, 1, 1.0]),
                                 likelihood_win=np.array([0, 0, 1, 1.0]),
                                 mse_model=np.array([1, 2, 3, 4.0]),
                                 mse_baseline=np.array([2, 1, 4, 5.0]))
    groups = [("p", "first two", np.array([True, True, False, False])),
              ("p", "empty", np.zeros(4, bool)),
              ("p", "last two", np.array([False, False, True, True]))]
    rows = where_it_loses.group_rows(evaluation, iter(groups))
    assert [row["group"] for row in rows] == ["first two", "last two"]  # no row for no image
    assert rows[0]["mse_win_fraction"] == 0.5 and rows[0]["likelihood_win_fraction"] == 0
    assert rows[1]["median_mse_model"] == 3.5 and rows[1]["median_mse_baseline"] == 4.5


@pytest.mark.slow
def test_the_command_tabulates_a_run_and_replaces_nothing_without_force(tmp_path) -> None:
    env = dict(os.environ, GALAXY_MODEL_CACHE=str(tmp_path / "cache"),
               GALAXY_MODEL_BUILTIN_SIZES="gz-heldout=24")
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--run", str(ROOT / "results" / "galaxy_vae_full"),
               "--data", "builtin:gz-heldout", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "where_it_loses.json").read_text())
    assert record["n"] == 24
    assert sum(row["n_images"] for row in record["rows"] if row["property"] == "morphology") == 24
    assert "| morphology | spiral |" in (out / "where_it_loses.md").read_text()
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode != 0 and again.stderr.strip().count("\n") == 0
    assert "pass --force" in again.stderr
    real = subprocess.run(command[:-4] + ["--data", "builtin:real", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert real.returncode != 0 and "only a built-in synthetic split" in real.stderr
    assert not (tmp_path / "r").exists()
