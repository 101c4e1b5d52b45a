"""What a finished run leaves for its users: weights.h5 and the training.json record."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

import numpy as np

from mochapy.atomic import write_hdf5_atomically, write_text_atomically
from mochapy.net import Net


def export_weights(net: Net, path: str) -> None:
    """Final parameters as float32 HDF5 (no solver state): what a shipped run carries."""
    arrays = {f"params/{k}": v.astype(np.float32) for k, v in net.params.host_arrays().items()}
    write_hdf5_atomically(path, arrays, {"format": 1})


def machine_description() -> dict[str, Any]:
    """The machine a run trained on, for training.json (speeds mean little without it)."""
    return {
        "node": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def read_json(path: str) -> dict:
    """A run's training.json (or any JSON record) as a dict."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_training_record(path: str, info: dict[str, Any], wall: float, changes: list[str],
                          from_iteration: int) -> None:
    """training.json: this session's `info`, the wall time summed over every session, and each
    resume that --allow-changed let differ from its snapshot (`changes`, from `from_iteration`)."""
    previous = read_json(path) if os.path.exists(path) else {}
    info = {**info, "wall_seconds_total": round(previous.get("wall_seconds_total", 0.0) + wall, 3)}
    resumed_with_changes = list(previous.get("resumed_with_changes", []))
    if changes:
        resumed_with_changes.append({"from_iteration": from_iteration, "changes": changes})
    if resumed_with_changes:
        info["resumed_with_changes"] = resumed_with_changes
    write_text_atomically(path, json.dumps(info, indent=2))
