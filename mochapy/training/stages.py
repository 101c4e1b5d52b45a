"""`train`: one run, or a staged run (each stage a run directory, merged into OUT at the end)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

from mochapy.atomic import (
    remove_partial_files,
    write_atomically,
    write_hdf5_atomically,
    write_text_atomically,
)
from mochapy.coffee import CoffeeLounge
from mochapy.config import RunConfig
from mochapy.run_directory import BLOB_SHAPES, check_run_directory, is_run, write_net_copy
from mochapy.training.export import read_json
from mochapy.training.lock import RunLock
from mochapy.training.reports import run_reports
from mochapy.training.trainer import Trainer, TrainResult


def train(config: RunConfig, out_dir: str, **options: Any) -> TrainResult:
    """Train a config: one run, or each stage in turn, each starting from the previous one.

    A staged run keeps every stage in OUT/stage<k>-<name>/ (a complete run directory) and puts
    the final net.yaml, weights.h5, merged statistics.h5 and training.json in OUT itself, so OUT
    loads like any run. --resume skips finished stages and resumes the unfinished one.
    """
    if not config.stages:
        return Trainer(config, out_dir, **options).run()
    resume = options.get("resume", False)
    check_run_directory(out_dir, resume)
    made = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with RunLock(out_dir):
        try:
            remove_partial_files(out_dir)
            _train_stages(config, out_dir, resume, options)
        except BaseException:
            if made and os.listdir(out_dir) == [".lock"]:  # bad input stopped the first stage
                os.unlink(os.path.join(out_dir, ".lock"))  # before it wrote anything: leave
                os.rmdir(out_dir)  # no half-made run directory behind
            raise
    run_reports(config, out_dir, options.get("progress", True))
    info = read_json(os.path.join(out_dir, "training.json"))
    final_loss = info["stages"][-1].get("final_train_loss")
    return TrainResult(out_dir, info["iterations"], info["wall_seconds_total"],
                       float("nan") if final_loss is None else final_loss, None)


def stage_finished(stage_dir: str) -> bool:
    """True when a stage's training ended normally (max_iter or its time budget reached)."""
    path = os.path.join(stage_dir, "training.json")
    return os.path.exists(path) and bool(read_json(path).get("finished"))


def _train_stages(config: RunConfig, out_dir: str, resume: bool, options: dict) -> None:
    previous = config.stages[0].config.init_from
    stage_dirs = []
    for index, stage in enumerate(config.stages):
        stage_dir = os.path.join(out_dir, f"stage{index + 1}-{stage.name}")
        stage_dirs.append(stage_dir)
        if resume and stage_finished(stage_dir):
            previous = stage_dir
            continue
        stage_config = dataclasses.replace(stage.config, init_from=previous, report=[],
                                           files=config.files)
        # a stage that never began (or stopped before its first snapshot) starts now; output
        # layers write their files in the final stage only (earlier stages' would be in the way)
        final = index == len(config.stages) - 1
        Trainer(stage_config, stage_dir, **{**options, "resume": resume and is_run(stage_dir),
                                            "keep_outputs": final}).run()
        previous = stage_dir
    _merge_stages(config, out_dir, stage_dirs)


def _merge_stages(config: RunConfig, out_dir: str, stage_dirs: list[str]) -> None:
    """The final stage's net and weights, every stage's statistics and timings, in OUT."""
    write_net_copy(out_dir, config, config.files)
    last = stage_dirs[-1]
    write_atomically(os.path.join(out_dir, "weights.h5"),
                     lambda temp: shutil.copyfile(os.path.join(last, "weights.h5"), temp))
    merged, stages, offset = {}, [], 0
    for stage, stage_dir in zip(config.stages, stage_dirs, strict=True):
        info = read_json(os.path.join(stage_dir, "training.json"))
        stages.append({"stage": stage.name, **info})
        lounge = CoffeeLounge.load(os.path.join(stage_dir, "statistics.h5"))
        for key, rows in lounge.as_arrays().items():
            shifted = rows.copy()
            shifted[:, 0] += offset
            merged[f"{stage.name}/{key}"] = shifted
        offset += info["iterations"]
    write_hdf5_atomically(os.path.join(out_dir, "statistics.h5"), merged,
                          {"columns": "iteration,value"})
    summary = {
        "name": config.name,
        "iterations": offset,
        "wall_seconds_total": round(sum(s["wall_seconds_total"] for s in stages), 3),
        "backend": stages[-1]["backend"],
        "n_params": stages[-1]["n_params"],
        BLOB_SHAPES: stages[-1].get(BLOB_SHAPES),
        "machine": stages[-1]["machine"],
        "stages": stages,
        "finished": all(s.get("finished") for s in stages),
    }
    write_text_atomically(os.path.join(out_dir, "training.json"), json.dumps(summary, indent=2))
