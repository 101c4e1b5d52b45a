"""Trainer: the solve loop with coffee breaks, snapshots, resume and a divergence stop."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from mochapy.atomic import remove_partial_files
from mochapy.backends import get_backend
from mochapy.coffee import BreakContext, CoffeeLounge, TrainingSummary, compose_breaks
from mochapy.config import RunConfig
from mochapy.errors import ConfigError, DivergenceError, MochaError
from mochapy.net import Net
from mochapy.run_directory import (
    BLOB_SHAPES,
    RunDirectoryError,
    blob_shapes,
    check_run_directory,
    fingerprint_differences,
    run_markers,
    training_fingerprint,
    write_net_copy,
)
from mochapy.runs import load_run, read_weights
from mochapy.snapshots import (
    BEST_SNAPSHOT,
    list_snapshots,
    prune_snapshots,
    read_snapshot,
    scan_snapshots,
    set_aside,
    snapshot_path,
    write_snapshot,
)
from mochapy.snapshots import Snapshot as SnapshotData
from mochapy.solvers import make_solver
from mochapy.training.divergence import first_nonfinite
from mochapy.training.export import (
    export_weights,
    machine_description,
    write_training_record,
)
from mochapy.training.lock import RunLock
from mochapy.training.reports import run_reports
from mochapy.training.signals import deferred_stop_signals


@dataclass
class TrainResult:
    out_dir: str
    iterations: int
    wall_seconds: float
    final_loss: float
    resumed_from: int | None


class Trainer:
    """Trains a RunConfig into a run directory. With keep_outputs=False the output layers'
    files are dropped at the end (a staged run's earlier stages: only the final stage writes
    them, as one run would)."""

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
        keep_outputs: bool = True,
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
        self.keep_outputs = keep_outputs
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
        path = snapshot_path(self.snapshot_dir, self.solver.iteration)
        self._write_verified_snapshot(path)
        for problem in prune_snapshots(self.snapshot_dir, self.config.coffee.keep_snapshots):
            self.log(f"warning: {problem}")
        self.lounge.save(os.path.join(self.out_dir, "statistics.h5"))
        return path

    def save_best_snapshot(self) -> str:
        """Write a verified snapshot of the current state as the run's best (it replaces the
        earlier best, which the run itself wrote)."""
        return self._write_verified_snapshot(os.path.join(self.out_dir, BEST_SNAPSHOT))

    def _write_verified_snapshot(self, path: str) -> str:
        if not self.backend.all_finite(self.net.params.data):
            bad = next(key for key, param in self.net.params.params.items()
                       if not self.backend.all_finite(param.data))
            raise DivergenceError(
                f"training diverged at iteration {self.solver.iteration}: the update made "
                f"parameter {bad!r} NaN/Inf; no snapshot written, {self._kept_snapshot()}"
            )
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
            snapshot=self.save_snapshot, snapshot_best=self.save_best_snapshot,
            take_mean_loss=self.take_mean_loss,
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
                self.net.discard_outputs()
                raise
            finally:  # validation passes write no output files: only the training net's count
                if self._val_net is not None:
                    self._val_net.discard_outputs()
            if self.keep_outputs:
                self.net.close()  # output layers' files appear now, whole
            else:
                self.net.discard_outputs()
            self._finish(wall)
        result = TrainResult(self.out_dir, self.solver.iteration, wall,
                             self.lounge.last("train/loss") or float("nan"), resumed_from)
        run_reports(self.config, self.out_dir, self.progress)
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
            f"training diverged {when}: {first_nonfinite(self.net, loss)}; {self._kept_snapshot()}"
        )

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
            BLOB_SHAPES: blob_shapes(self.net.blobs),
            "final_train_loss": self.lounge.last("train/loss"),
            "final_validation_loss": self.lounge.last("validation/loss"),
            "machine": machine_description(),
            "finished": True,
        }
        write_training_record(os.path.join(self.out_dir, "training.json"), info, wall,
                              self.changes, self._start_iter)
        self.log(f"done: {iteration} iterations in {wall:.1f} s; run directory {self.out_dir}")


