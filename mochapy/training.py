"""Trainer: the solve loop with coffee breaks, snapshots, resume, divergence stop and a run lock.

A run directory holds: net.yaml (the exact config), snapshots/ (verified HDF5 snapshots),
statistics.h5 (the lounge), weights.h5 (final float parameters, no solver state), training.json
(iterations, wall time, speed, machine) and log.txt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import platform
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import numpy as np
from tqdm import tqdm

from mochapy.atomic import (
    remove_partial_files,
    write_atomically,
    write_hdf5_atomically,
    write_text_atomically,
)
from mochapy.backends import get_backend
from mochapy.coffee import BreakContext, CoffeeLounge, TrainingSummary, compose_breaks
from mochapy.config import RunConfig
from mochapy.errors import ConfigError, DivergenceError, MochaError
from mochapy.net import Net
from mochapy.run_directory import (
    RunDirectoryError,
    check_run_directory,
    fingerprint_differences,
    is_run,
    run_markers,
    training_fingerprint,
    write_net_copy,
)
from mochapy.runs import load_run, read_weights
from mochapy.snapshots import Snapshot as SnapshotData
from mochapy.snapshots import (
    list_snapshots,
    prune_snapshots,
    read_snapshot,
    scan_snapshots,
    set_aside,
    snapshot_path,
    write_snapshot,
)
from mochapy.solvers import make_solver


@dataclass
class TrainResult:
    out_dir: str
    iterations: int
    wall_seconds: float
    final_loss: float
    resumed_from: int | None


class RunLock:
    """An exclusive lock on a run directory, so two runs never interleave their files."""

    def __init__(self, out_dir: str) -> None:
        self.path = os.path.join(out_dir, ".lock")
        self.handle: Any = None
        self.previous: str | None = None  # what the file held before (None: this call made it)

    def __enter__(self) -> RunLock:
        existed = os.path.exists(self.path)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            owner = self.handle.read().strip() or "another process"
            self.handle.close()
            raise MochaError(
                f"run directory {os.path.dirname(self.path)} is in use by {owner}; "
                "wait for it or choose another --out"
            ) from None
        self.handle.seek(0)
        self.previous = self.handle.read() if existed else None
        try:  # unbuffered, so a full disk fails here and not again when the file is closed
            os.ftruncate(self.handle.fileno(), 0)
            os.write(self.handle.fileno(), f"pid {os.getpid()} on {platform.node()}".encode())
        except OSError as exc:  # we hold the lock, so no other run uses this file
            os.unlink(self.path)
            self.__exit__()
            raise OSError(exc.errno, exc.strerror, self.path) from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

    def undo(self) -> None:
        """Leave the lock file as it was before (removed if this call made it): for a run
        refused before it started, which must change nothing in the folder."""
        if self.previous is None:
            os.unlink(self.path)
        else:
            os.ftruncate(self.handle.fileno(), 0)
            os.write(self.handle.fileno(), self.previous.encode())


class Trainer:
    """Trains a RunConfig into a run directory."""

    def __init__(
        self,
        config: RunConfig,
        out_dir: str,
        *,
        backend: str | None = None,
        max_iter: int | None = None,
        resume: bool = False,
        allow_changed: bool = False,
        progress: bool = True,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.out_dir = out_dir
        self.snapshot_dir = os.path.join(out_dir, "snapshots")
        self.backend_name = backend or config.backend
        self.max_iter = config.solver.max_iter if max_iter is None else max_iter
        self.resume = resume
        self.allow_changed = allow_changed
        self.changes: list[str] = []  # what differs from the snapshot resumed (--allow-changed)
        self.fingerprint = training_fingerprint(config, out_dir)
        self.progress = progress
        self.echo = echo or tqdm.write
        self.lounge = CoffeeLounge()
        self._loss_sum = 0.0
        self._loss_count = 0
        self._val_net: Net | None = None

    # -- what coffee breaks see, through their BreakContext -------------------------------------
    def log(self, line: str) -> None:
        self.echo(line)
        with open(os.path.join(self.out_dir, "log.txt"), "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def take_mean_loss(self) -> float:
        mean = self._loss_sum / max(self._loss_count, 1)
        self._loss_sum, self._loss_count = 0.0, 0
        return mean

    def iters_per_sec(self) -> float:
        elapsed = time.perf_counter() - self._t0
        return (self.solver.iteration - self._start_iter) / elapsed if elapsed > 0 else 0.0

    def validation_net(self) -> Net:
        if self._val_net is None:
            self._val_net = Net(
                f"{self.config.name}-validation", self.backend, self.config.validation_layers(),
                seed=self.config.seed + 1, phase="test", params=self.net.params,
            )
        return self._val_net

    def save_snapshot(self) -> str:
        """Write a verified snapshot of the current state, then prune old ones."""
        if not self.backend.all_finite(self.net.params.data):
            bad = next(key for key, param in self.net.params.params.items()
                       if not self.backend.all_finite(param.data))
            raise DivergenceError(
                f"training diverged at iteration {self.solver.iteration}: the update made "
                f"parameter {bad!r} NaN/Inf; no snapshot written, {self._kept_snapshot()}"
            )
        path = snapshot_path(self.snapshot_dir, self.solver.iteration)
        write_snapshot(path, SnapshotData(
            iteration=self.solver.iteration,
            params=self.net.params.host_arrays(),
            # the losses summed since the last summary ride along, so a resumed run's next
            # summary averages the same iterations as an uninterrupted run's
            solver={**self.solver.state_dict(), "train_loss_sum": np.array(self._loss_sum),
                    "train_loss_count": np.array(self._loss_count)},
            layers=self.net.layer_states(),
            statistics=self.lounge.as_arrays(),
            config=self.fingerprint,
        ))
        read_snapshot(path)  # verify before older snapshots go
        for problem in prune_snapshots(self.snapshot_dir, self.config.coffee.keep_snapshots):
            self.log(f"warning: {problem}")
        self.lounge.save(os.path.join(self.out_dir, "statistics.h5"))
        return path

    # -- the run --------------------------------------------------------------------------------
    def _prepare_directory(self) -> None:
        for folder in (self.out_dir, self.snapshot_dir):
            for path in remove_partial_files(folder):
                self.log(f"removed {path}, a file a killed run left half-written")
        config_copy = os.path.join(self.out_dir, "net.yaml")
        if not self.resume or self.changes or not os.path.exists(config_copy):
            write_net_copy(self.out_dir, self.config, self.config.files)

    def _build(self) -> None:
        """Set up everything that can fail on bad input before the run directory is touched."""
        cfg = self.config
        self.backend = get_backend(self.backend_name, cfg.dtype)
        self.net = Net(cfg.name, self.backend, cfg.layers, seed=cfg.seed, phase="train")
        self.solver = make_solver(cfg.solver, self.net)
        self.breaks = compose_breaks(cfg.coffee)
        self.coffee_context = BreakContext(
            net=self.net, lounge=self.lounge, log=self.log, solver=self.solver,
            snapshot=self.save_snapshot, take_mean_loss=self.take_mean_loss,
            iters_per_sec=self.iters_per_sec, validation_net=self.validation_net,
        )
        if cfg.coffee.validation:
            self.validation_net()  # a bad validation source fails now, not hours into the run
        # a missing or mismatched init_from too (--resume reads it only if no snapshot is left)
        self._kept_initial: list[str] = []  # parameters init_from_partial left as declared
        self._initialised_from = None if self.resume else self._init_from()

    def _claim_directory(self) -> SnapshotData | None:
        """Refuse a new run over a run or a user's file, a resume with nothing valid to resume
        from, or one whose net, solver or data differ from the snapshot's (unless allowed).
        Changes nothing in the folder; returns the snapshot to resume from."""
        check_run_directory(self.out_dir, self.resume)
        if not self.resume:
            return None
        self._scan = scan = scan_snapshots(self.snapshot_dir)
        if scan.newest is None:
            found = ", ".join(run_markers(self.out_dir))
            damaged = f"; {scan.damaged[0][1]}" if scan.damaged else ""
            raise RunDirectoryError(
                f"cannot resume {self.out_dir}: no valid snapshot (found {found}{damaged}); "
                "start a new run in another --out (init_from can start it from weights.h5)"
            )
        if scan.newest.config:
            changes = fingerprint_differences(scan.newest.config, self.fingerprint)
            if changes and not self.allow_changed:
                raise RunDirectoryError(
                    f"cannot resume {self.out_dir}: the net differs from snapshot "
                    f"{scan.newest.iteration}'s: {'; '.join(changes)} (pass --allow-changed "
                    "with --resume to go on anyway; training.json records it)"
                )
            self.changes = changes
        return scan.newest

    def _restore(self, snap: SnapshotData | None) -> int | None:
        """Continue from the snapshot _claim_directory chose (--resume), else from init_from."""
        if snap is None:
            self._log_init_from(self._initialised_from)
            return None
        for problem in set_aside(self._scan.damaged):  # one line each, in the log too
            self.log(f"warning: {problem}")
        if self.changes:
            self.log(f"resuming with changes (--allow-changed): {'; '.join(self.changes)}")
        self.net.params.load_host_arrays(snap.params, f"snapshot {snap.iteration}")
        self.solver.load_state_dict(snap.solver)
        self._loss_sum = float(snap.solver.get("train_loss_sum", 0.0))
        self._loss_count = int(snap.solver.get("train_loss_count", 0))
        self.net.load_layer_states(snap.layers)
        self.lounge.load_arrays(snap.statistics)
        return snap.iteration

    def _init_from(self) -> str | None:
        """Load another run's parameters (e.g. a second training stage); returns where from."""
        source = self.config.init_from
        if source is None:
            return None
        if not os.path.exists(source):
            raise ConfigError(f"{self.config.path}: init_from {source} does not exist")
        params = load_run(source).params if os.path.isdir(source) else read_weights(source)
        self._kept_initial = self.net.params.load_host_arrays(
            params, f"init_from {source}", partial=self.config.init_from_partial
        )
        return source

    def _log_init_from(self, source: str | None) -> None:
        if source is not None:
            self.log(f"parameters initialised from {source}")
        if source is not None and self._kept_initial:
            self.log(f"not in {source}, initialised as declared: {', '.join(self._kept_initial)}")

    @contextlib.contextmanager
    def _locked_directory(self) -> Iterator[None]:
        """Create and lock the run directory. If the disk is full or read-only, remove the
        folders this call made, so a run that never started leaves nothing behind."""
        made = [d for d in (self.out_dir, self.snapshot_dir) if not os.path.isdir(d)]
        with contextlib.ExitStack() as stack:
            lock = RunLock(self.out_dir)
            try:
                os.makedirs(self.snapshot_dir, exist_ok=True)
                stack.enter_context(lock)
                self._resume_from = self._claim_directory()
            except (OSError, MochaError):
                if lock.handle is not None and not lock.handle.closed:
                    lock.undo()  # refused: the folder is left exactly as it was
                for folder in reversed(made):
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)  # only if empty: never another process's files
                raise
            yield

    def run(self) -> TrainResult:
        self._build()
        if self.resume and not os.path.exists(self.out_dir):
            check_run_directory(self.out_dir, self.resume)  # says it does not exist
        with self._locked_directory():
            self._prepare_directory()
            resumed_from = self._restore(self._resume_from)
            if resumed_from is not None:
                self.log(f"resuming {self.config.name} from iteration {resumed_from}")
            self.log(
                f"training {self.config.name}: {self.net.n_params:,} parameters, backend "
                f"{self.backend.describe()}, {self.max_iter} iterations -> {self.out_dir}"
            )
            interrupted: list[int] = []
            # NaN/Inf is caught and reported as one DivergenceError, without NumPy warnings.
            try:
                with deferred_stop_signals(interrupted), np.errstate(
                    over="ignore", invalid="ignore", divide="ignore"
                ):
                    wall = self._loop(interrupted)
            except BaseException:
                self._discard_outputs(self.net)
                raise
            finally:  # validation passes write no output files: only the training net's count
                if self._val_net is not None:
                    self._discard_outputs(self._val_net)
            self.net.close()  # output layers' files appear now, whole
            self._finish(wall)
        result = TrainResult(self.out_dir, self.solver.iteration, wall,
                             self.lounge.last("train/loss") or float("nan"), resumed_from)
        self._run_reports()
        return result

    def _loop(self, interrupted: list[int]) -> float:
        self._start_iter = self.solver.iteration
        self._t0 = time.perf_counter()
        bar = tqdm(total=self.max_iter, initial=self._start_iter, disable=not self.progress,
                   unit="it", dynamic_ncols=True, desc=self.config.name)
        net, solver = self.net, self.solver
        # On the GPU a runner does whole steps (as one CUDA graph when it can); the losses are
        # summed on the device and read, and checked for NaN/Inf, only when a coffee break is due.
        runner = self.backend.step_runner(net, solver) if self.backend.kind == "gpu" else None
        try:
            budget = self.config.solver.max_seconds
            while solver.iteration < self.max_iter:
                if budget and time.perf_counter() - self._t0 > budget:
                    self.log(f"time budget of {budget:.0f} s reached at iteration "
                             f"{solver.iteration}")
                    break
                if runner is not None:
                    iteration = solver.iteration + 1
                    runner.step()
                    if iteration == self._start_iter + 2:
                        self.log(f"GPU training steps: {runner.describe()}")
                    if interrupted or iteration >= self.max_iter or any(
                        coffee.due(iteration) for coffee in self.breaks
                    ):
                        loss = self._take_device_losses(runner, iteration)
                else:
                    net.forward()
                    net.backward()
                    loss = net.loss()
                    iteration = solver.iteration + 1
                    if not math.isfinite(loss) or not net.gradients_finite():
                        raise self._divergence(f"at iteration {iteration}", loss)
                    self._loss_sum += loss
                    self._loss_count += 1
                    solver.update()
                bar.update(1)
                if iteration % self.config.coffee.summary_every == 0:
                    bar.set_postfix(loss=f"{loss:.4g}")
                for coffee in self.breaks:
                    if coffee.due(iteration):
                        coffee.run(self.coffee_context, iteration)
                if interrupted:
                    path = self.save_snapshot()
                    raise MochaError(
                        f"stopped by {signal.Signals(interrupted[0]).name} at iteration "
                        f"{iteration}; saved {path} (resume with --resume)"
                    )
            if runner is not None:  # the time budget may stop the loop between reads
                self._take_device_losses(runner, solver.iteration)
        finally:
            bar.close()
        return time.perf_counter() - self._t0

    @staticmethod
    def _discard_outputs(net: Net) -> None:
        """Drop what a net's output layers wrote so far: a failed run leaves no half-filled
        file."""
        for layer in net.layers:
            discard = getattr(layer, "discard", None)
            if discard:
                discard()

    def _take_device_losses(self, runner: Any, iteration: int) -> float | None:
        """Add the losses the GPU summed since the last read; DivergenceError if any was NaN/Inf
        or a parameter is. Returns their mean (None when no step ran since the last read)."""
        total, count = runner.take_losses()
        if not count:
            return None
        if not math.isfinite(total) or not self.backend.all_finite(self.net.params.data):
            raise self._divergence(
                f"between iterations {iteration - count + 1} and {iteration} "
                "(the GPU checks at coffee breaks)", total
            )
        self._loss_sum += total
        self._loss_count += count
        return total / count

    def _divergence(self, when: str, loss: float) -> DivergenceError:
        """The error for NaN/Inf found `when`: what first went non-finite (a layer's output or
        loss, a gradient, the summed loss, a parameter, or only the gradient's norm) and which
        snapshot is kept."""
        return DivergenceError(
            f"training diverged {when}: {self._first_nonfinite(loss)}; {self._kept_snapshot()}"
        )

    def _first_nonfinite(self, loss: float) -> str:
        where = self.net.first_nonfinite()
        if where is not None:
            return f"NaN/Inf first in {where}"
        if not math.isfinite(loss):
            return "NaN/Inf first in the summed loss (every layer's loss is finite: their sum " \
                   "overflows)"
        finite = self.backend.all_finite
        for key, param in self.net.params.params.items():
            if not finite(param.data):
                return f"NaN/Inf first in parameter {key!r}"
        largest = max(self.net.params.params.items(),
                      key=lambda item: float(np.abs(self.backend.to_host(item[1].grad)).max()))
        value = float(np.abs(self.backend.to_host(largest[1].grad)).max())
        return (f"every loss, gradient and parameter is finite, but the squared gradient norm "
                f"overflows {self.backend.dtype.name} (largest gradient {value:.3g}, in "
                f"{largest[0]!r})")

    def _kept_snapshot(self) -> str:
        kept = list_snapshots(self.snapshot_dir)
        return f"last good snapshot kept: {kept[0]}" if kept else "no snapshot yet"

    def _finish(self, wall: float) -> None:
        iteration = self.solver.iteration
        if self._loss_count:
            TrainingSummary(1).run(self.coffee_context, iteration)
        if not os.path.exists(snapshot_path(self.snapshot_dir, iteration)):
            self.save_snapshot()
        self.lounge.save(os.path.join(self.out_dir, "statistics.h5"))
        export_weights(self.net, os.path.join(self.out_dir, "weights.h5"))
        info = {
            "name": self.config.name,
            "iterations": iteration,
            "wall_seconds_this_session": round(wall, 3),
            "iters_per_sec_this_session": round(self.iters_per_sec(), 2),
            "backend": self.backend.kind,
            "backend_detail": self.backend.describe(),
            "dtype": self.backend.dtype.name,
            "n_params": self.net.n_params,
            "final_train_loss": self.lounge.last("train/loss"),
            "final_validation_loss": self.lounge.last("validation/loss"),
            "machine": machine_description(),
            "finished": True,
        }
        path = os.path.join(self.out_dir, "training.json")
        previous = _read_json(path) if os.path.exists(path) else {}
        info["wall_seconds_total"] = round(
            previous.get("wall_seconds_total", 0.0) + wall, 3
        )
        resumed_with_changes = list(previous.get("resumed_with_changes", []))
        if self.changes:  # what --resume --allow-changed let differ from the snapshot
            resumed_with_changes.append({"from_iteration": self._start_iter,
                                         "changes": self.changes})
        if resumed_with_changes:
            info["resumed_with_changes"] = resumed_with_changes
        write_text_atomically(path, json.dumps(info, indent=2))
        self.log(f"done: {iteration} iterations in {wall:.1f} s; run directory {self.out_dir}")

    def _run_reports(self) -> None:
        run_reports(self.config, self.out_dir, self.progress)


def run_reports(config: RunConfig, out_dir: str, progress: bool) -> None:
    """Call the report hooks the YAML names (entry points of group `mochapy.reports`)."""
    for name in config.report:
        hooks = [e for e in entry_points(group="mochapy.reports") if e.name == name]
        if not hooks:
            raise ConfigError(f"{config.path}: report {name!r} is not installed")
        hooks[0].load()(out_dir, progress=progress)


def stage_finished(stage_dir: str) -> bool:
    """True when a stage's training ended normally (max_iter or its time budget reached)."""
    path = os.path.join(stage_dir, "training.json")
    return os.path.exists(path) and bool(_read_json(path).get("finished"))


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
    info = _read_json(os.path.join(out_dir, "training.json"))
    final_loss = info["stages"][-1].get("final_train_loss")
    return TrainResult(out_dir, info["iterations"], info["wall_seconds_total"],
                       float("nan") if final_loss is None else final_loss, None)


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
        # a stage that never began (or stopped before its first snapshot) starts now
        Trainer(stage_config, stage_dir, **{**options, "resume": resume and is_run(stage_dir)}
                ).run()
        previous = stage_dir
    _merge_stages(config, out_dir, stage_dirs)


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _merge_stages(config: RunConfig, out_dir: str, stage_dirs: list[str]) -> None:
    """The final stage's net and weights, every stage's statistics and timings, in OUT."""
    write_net_copy(out_dir, config, config.files)
    last = stage_dirs[-1]
    write_atomically(os.path.join(out_dir, "weights.h5"),
                     lambda temp: shutil.copyfile(os.path.join(last, "weights.h5"), temp))
    merged, stages, offset = {}, [], 0
    for stage, stage_dir in zip(config.stages, stage_dirs, strict=True):
        info = _read_json(os.path.join(stage_dir, "training.json"))
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
        "machine": stages[-1]["machine"],
        "stages": stages,
        "finished": all(s.get("finished") for s in stages),
    }
    write_text_atomically(os.path.join(out_dir, "training.json"), json.dumps(summary, indent=2))


@contextlib.contextmanager
def deferred_stop_signals(received: list[int]) -> Iterator[None]:
    """SIGTERM and Ctrl-C only note the signal: the loop ends the iteration (a solver update is
    never cut in half) and then snapshots. Only the main thread may install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        number: signal.signal(number, lambda sig, frame: received.append(sig))
        for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def export_weights(net: Net, path: str) -> None:
    """Final parameters as float32 HDF5 (no solver state): what a shipped run carries."""
    arrays = {f"params/{k}": v.astype(np.float32) for k, v in net.params.host_arrays().items()}
    write_hdf5_atomically(path, arrays, {"format": 1})


def machine_description() -> dict[str, Any]:
    return {
        "node": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
