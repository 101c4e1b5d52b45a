"""Coffee breaks: work done every N iterations (Mocha's CoffeeBreak), each a small class.

A break's `run(trainer, iteration)` may record statistics in the lounge, print, snapshot or
validate; the trainer calls it whenever `iteration % every == 0` and once at the end.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mochapy.training import Trainer


class CoffeeBreak(ABC):
    """Something done every `every` iterations; subclasses say what in `run`."""

    def __init__(self, every: int) -> None:
        self.every = every

    def due(self, iteration: int) -> bool:
        return iteration % self.every == 0

    @abstractmethod
    def run(self, trainer: Trainer, iteration: int) -> None: ...


class TrainingSummary(CoffeeBreak):
    """Records the mean training loss since the last summary, the lr and the speed; prints it."""

    def run(self, trainer: Trainer, iteration: int) -> None:
        loss = trainer.take_mean_loss()
        lounge = trainer.lounge
        lounge.record("train/loss", iteration, loss)
        lounge.record("train/learning_rate", iteration, trainer.solver.learning_rate())
        lounge.record("train/iters_per_sec", iteration, trainer.iters_per_sec())
        trainer.log(
            f"iter {iteration:>8d}  loss {loss:12.4f}  lr {trainer.solver.learning_rate():.3g}  "
            f"{trainer.iters_per_sec():7.1f} it/s"
        )


class Snapshot(CoffeeBreak):
    """Writes a verified snapshot (the trainer refuses to snapshot non-finite parameters)."""

    def run(self, trainer: Trainer, iteration: int) -> None:
        trainer.save_snapshot()


class ValidationPerformance(CoffeeBreak):
    """Mean loss per loss layer of the test net over the validation source."""

    def __init__(self, every: int, max_batches: int = 0) -> None:
        super().__init__(every)
        self.max_batches = max_batches
        self.initial_states: dict[str, dict[str, np.ndarray]] | None = None

    def run(self, trainer: Trainer, iteration: int) -> None:
        net = trainer.validation_net()
        data_layer = net.layer(trainer.config.coffee.validation.data_layer)
        n_batches = max(1, data_layer.n_rows // net.batch_size)
        if self.max_batches:
            n_batches = min(n_batches, self.max_batches)
        if self.initial_states is None:
            self.initial_states = copy.deepcopy(net.layer_states())
        # The same batches and the same noise every time: values comparable across validations,
        # and a resumed run (a fresh validation net) validates exactly as an uninterrupted one.
        net.load_layer_states(self.initial_states)
        totals: dict[str, float] = {}
        for _ in range(n_batches):
            net.forward()
            for name, value in net.loss_by_layer().items():
                totals[name] = totals.get(name, 0.0) + value
        loss = sum(totals.values()) / n_batches
        previous_best = trainer.lounge.best("validation/loss")
        if len(totals) > 1:
            # Per-layer series beside the total; a layer named "loss" would be the total's name.
            for name, value in totals.items():
                if name != "loss":
                    trainer.lounge.record(f"validation/{name}", iteration, value / n_batches)
        trainer.lounge.record("validation/loss", iteration, loss)
        policy = trainer.solver.config.lr_policy
        if policy.type == "decay_on_validation" and previous_best is not None and (
            not math.isfinite(loss) or loss >= previous_best
        ):
            policy.decays += 1
        trainer.log(f"iter {iteration:>8d}  validation loss {loss:12.4f} "
                    f"({n_batches * net.batch_size} images)")
