"""A staged run writes its output layers' files once, in the final stage, as one run would:
an earlier stage's file no longer stands in the way of the next stage (which refused to
replace it), and nothing half-written is left."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import yaml

from mochapy.config import load_config
from mochapy.training import train


def test_a_staged_run_writes_its_output_file_in_the_final_stage(tiny_example: Path,
                                                                tmp_path: Path) -> None:
    raw = yaml.safe_load(tiny_example.read_text())
    raw["layers"].append({"type": "HDF5Output", "name": "save", "bottoms": ["pred"],
                          "filename": "predictions.h5"})
    raw["stages"] = [{"name": "first", "set": {"solver.max_iter": 3}},
                     {"name": "second", "set": {"solver.max_iter": 2}}]
    net = tiny_example.with_name("staged.yaml")
    net.write_text(yaml.safe_dump(raw, sort_keys=False))
    before = sorted(os.listdir(net.parent))
    result = train(load_config(str(net)), str(tmp_path / "run"), progress=False)
    assert result.iterations == 5
    assert sorted(os.listdir(net.parent)) == sorted([*before, "predictions.h5"])
    with h5py.File(net.parent / "predictions.h5", "r") as handle:
        assert handle["pred"].shape == (2 * 32, 1)  # the final stage's two batches
