"""Training: the solve loop (trainer), staged runs (stages), the run lock, stop signals, what a
run exports, and report plugins. Import from here; the submodules are split by concern.

A run directory holds: net.yaml (the exact config), snapshots/ (verified HDF5 snapshots),
statistics.h5 (the lounge), weights.h5 (final float parameters, no solver state), training.json
(iterations, wall time, speed, machine) and log.txt.
"""

from mochapy.training.export import export_weights, machine_description
from mochapy.training.lock import RunLock
from mochapy.training.reports import run_reports
from mochapy.training.signals import deferred_stop_signals
from mochapy.training.stages import stage_finished, train
from mochapy.training.trainer import Trainer, TrainResult

__all__ = [
    "RunLock", "TrainResult", "Trainer", "deferred_stop_signals", "export_weights",
    "machine_description", "run_reports", "stage_finished", "train",
]
