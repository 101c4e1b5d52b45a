"""What makes a folder a run, and what a run may write over: the output policy for `mochapy run`.

A folder is a run when it holds a run's own marker: training.json, weights.h5 or a snapshot (a
damaged one set aside counts too), or a stage folder that does. A new run goes only into a
folder that is not a run and holds none of a run's file names (the user's own net.yaml, say);
`--resume` goes only into a run. The net.yaml a run writes starts with RUN_COPY_HEADER, so its
own copy is told apart from a user's file; it is never written over the net file it was given.

A snapshot records what training it continues (net, solver, data, batch sizes), so a resume
with another net, solver or data is refused with the list of differences. training.json records
each blob's per-row shape (`blob_shapes`), so a run's users read its input and code sizes
instead of inferring them from weights.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from mochapy.atomic import write_text_atomically
from mochapy.config import RunConfig, text_for_directory
from mochapy.errors import MochaError
from mochapy.outputs import same_file
from mochapy.snapshots import list_snapshots, set_aside_paths

BLOB_SHAPES = "blob_shapes"  # the training.json key
RUN_COPY_HEADER = "# written by mochapy run: the net this run trains, paths relative to here\n"
RUN_FILES = ("net.yaml", "weights.h5", "training.json", "statistics.h5")
# solver fields a resume may change: how long to go on is the usual reason to resume
RESUMABLE_SOLVER_FIELDS = ("max_iter", "max_seconds")


class RunDirectoryError(MochaError):
    """A run would replace a finished run or a user's file, or --resume has nothing to resume."""


def run_markers(out_dir: str) -> list[str]:
    """What in `out_dir` shows a run was there, in words (empty: not a run)."""
    found = []
    info_path = os.path.join(out_dir, "training.json")
    if os.path.isfile(info_path):
        found.append(f"training.json ({_training_state(info_path)})")
    if os.path.isfile(os.path.join(out_dir, "weights.h5")):
        found.append("weights.h5")
    snapshots = os.path.join(out_dir, "snapshots")
    count, damaged = len(list_snapshots(snapshots)), len(set_aside_paths(snapshots))
    if count:
        found.append(f"{count} snapshot{'s' if count > 1 else ''}")
    if damaged:
        found.append(f"{damaged} damaged snapshot{'s' if damaged > 1 else ''} set aside")
    found += [f"stage {os.path.basename(stage)}"
              for stage in sorted(glob.glob(os.path.join(glob.escape(out_dir), "stage*-*")))
              if os.path.isdir(stage) and run_markers(stage)]
    return found


def is_run(out_dir: str) -> bool:
    """True when `out_dir` holds a run (see run_markers): `--resume` has something to go on."""
    return bool(run_markers(out_dir))


def _training_state(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return "unreadable"
    if not isinstance(info, dict):
        return "unreadable"
    state = "finished" if info.get("finished") else "unfinished"
    return f"{state}, {info.get('iterations', '?')} iterations"


def is_run_copy(path: str) -> bool:
    """True when `path` is a net.yaml that a run wrote (it starts with RUN_COPY_HEADER)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(len(RUN_COPY_HEADER)) == RUN_COPY_HEADER
    except (OSError, UnicodeDecodeError):
        return False


def check_run_directory(out_dir: str, resume: bool) -> None:
    """Refuse, as one line, a new run into a run or over a user's file, or a resume of nothing."""
    markers = run_markers(out_dir)
    if resume and not markers:
        what = ("does not exist" if not os.path.exists(out_dir) else
                "holds no run (no training.json, weights.h5 or snapshot)")
        raise RunDirectoryError(f"nothing to resume: {out_dir} {what}; "
                                "run without --resume to start a new run")
    if resume:
        return
    if markers:
        raise RunDirectoryError(
            f"{out_dir} already holds a run ({', '.join(markers)}); pass --resume to continue "
            "it or choose another --out"
        )
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.lexists(path) and not (name == "net.yaml" and is_run_copy(path)):
            raise RunDirectoryError(f"{path} exists and no run wrote it; choose another --out "
                                    "(a run never writes over it)")


def write_net_copy(out_dir: str, config: RunConfig, inputs: Iterable[str]) -> str | None:
    """Write the run's net.yaml (paths relative to `out_dir`), unless that file is one of the
    net files the config was read from: then it already is the net, and stays as the user wrote
    it. Returns the path written, or None."""
    path = os.path.join(out_dir, "net.yaml")
    if any(os.path.lexists(path) and same_file(path, source) for source in inputs):
        return None
    write_text_atomically(path, RUN_COPY_HEADER + text_for_directory(config.text, out_dir))
    return path


def blob_shapes(blobs: Mapping[str, Any]) -> dict[str, list[int]]:
    """Each blob's shape without its batch axis (what one row, e.g. one image, looks like), by
    name, for training.json; `blobs` maps names to Blobs (Net.blobs)."""
    return {name: [int(size) for size in blob.shape[1:]] for name, blob in blobs.items()}


def recorded_blob_shapes(run_dir: str) -> dict[str, tuple[int, ...]] | None:
    """The per-row blob shapes training.json records (a staged run's: its last stage's), or None
    for a run that has no record (trained before it was kept, or not finished)."""
    path = os.path.join(run_dir, "training.json")
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return None
    shapes = info.get(BLOB_SHAPES) if isinstance(info, dict) else None
    if not isinstance(shapes, dict):
        return None
    return {str(name): tuple(int(size) for size in shape) for name, shape in shapes.items()}


def training_fingerprint(config: RunConfig, out_dir: str) -> str:
    """The net, solver (but for how long it runs), dtype and data sources as JSON, with the run
    directory, so that a data path counts as unchanged if it is the same file, or the same
    relative to the run (a run moved together with its data)."""
    raw = yaml.safe_load(config.text) if config.text else {}
    raw = raw if isinstance(raw, dict) else {}
    solver = {k: v for k, v in (raw.get("solver") or {}).items()
              if k not in RESUMABLE_SOLVER_FIELDS}
    layers = {str(entry.get("name")): entry for entry in raw.get("layers") or []
              if isinstance(entry, dict)}
    validation = ((raw.get("coffee_breaks") or {}).get("validation") or {})
    return json.dumps({"dtype": raw.get("dtype", "float32"), "solver": solver, "layers": layers,
                       "validation_source": validation.get("source"),
                       "run_dir": os.path.abspath(out_dir)}, sort_keys=True, default=str)


def fingerprint_differences(before: str, now: str) -> list[str]:
    """`what: old -> new` for each field that differs between two training_fingerprint()s."""
    old, new = json.loads(before), json.loads(now)
    old_dir, new_dir = old.pop("run_dir", None), new.pop("run_dir", None)
    old, new = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(old) | set(new)):
        was, is_now = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if was == is_now or _same_place(key, was, is_now, old_dir, new_dir):
            continue
        changes.append(f"{key}: {_shown(was)} -> {_shown(is_now)}")
    return changes


def _same_place(key: str, was: object, is_now: object, old_dir: object, new_dir: object) -> bool:
    """Two absolute data paths name the same data: one file, or one place relative to the run."""
    if not key.endswith("source") or not all(isinstance(v, str) for v in
                                               (was, is_now, old_dir, new_dir)):
        return False
    if not (os.path.isabs(was) and os.path.isabs(is_now)):
        return False
    return (same_file(was, is_now)
            or os.path.relpath(was, old_dir) == os.path.relpath(is_now, new_dir))


_ABSENT = object()


def _shown(value: object) -> str:
    return "(none)" if value is _ABSENT else json.dumps(value, default=str)


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    """Nested mappings as dotted keys: layers.data.batch_size -> 4."""
    if isinstance(value, dict) and value:
        flat: dict[str, object] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}
