"""Coffee breaks: work done every N iterations (Mocha's CoffeeBreak), each a small class.

A break's `run(context, iteration)` may record statistics in the lounge, print, snapshot or
validate; the trainer calls it whenever `iteration % every == 0` and once at the end. The order
of registration below is the order in which breaks due at one iteration run: a snapshot holds
the summary and validation of its own iteration.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import numpy as np

from mochapy.coffee.base import (
    BreakContext,
    CoffeeBreak,
    CoffeeConfig,
    ValidationConfig,
    register_break,
)
from mochapy.errors import ConfigError, require_int
from mochapy.layers import LayerConfig


@register_break("training_summary")
class TrainingSummary(CoffeeBreak):
    """Records the mean training loss since the last summary, the lr and the speed; prints it."""

    @classmethod
    def settings(cls, body: dict[str, Any], label: str, every: int,
                 layers: list[LayerConfig]) -> dict[str, Any]:
        return {"summary_every": every}

    @classmethod
    def from_config(cls, coffee: CoffeeConfig) -> TrainingSummary:
        return cls(coffee.summary_every)

    def run(self, context: BreakContext, iteration: int) -> None:
        loss = context.take_mean_loss()
        lr = context.solver.learning_rate()
        speed = context.iters_per_sec()
        context.lounge.record("train/loss", iteration, loss)
        context.lounge.record("train/learning_rate", iteration, lr)
        context.lounge.record("train/iters_per_sec", iteration, speed)
        context.log(f"iter {iteration:>8d}  loss {loss:12.4f}  lr {lr:.3g}  {speed:7.1f} it/s")


@register_break("validation")
class ValidationPerformance(CoffeeBreak):
    """Mean loss per loss layer of the test net over the validation source; the solver hears of
    each value (the decay_on_validation policy cuts the lr when it does not improve)."""

    fields: ClassVar[tuple[str, ...]] = ("every", "source", "batch_size", "max_batches",
                                         "data_layer", "keep_best")

    def __init__(self, every: int, data_layer: str, max_batches: int = 0,
                 keep_best: bool = False) -> None:
        super().__init__(every)
        self.data_layer = data_layer
        self.max_batches = max_batches
        self.keep_best = keep_best
        self.initial_states: dict[str, dict[str, np.ndarray]] | None = None

    @classmethod
    def settings(cls, body: dict[str, Any], label: str, every: int,
                 layers: list[LayerConfig]) -> dict[str, Any]:
        source = body.get("source")
        if not isinstance(source, str) or not source:
            raise ConfigError(f"{label}.source: must name an HDF5 file or builtin split")
        data_layers = [c.name for c in layers if c.type_name == "HDF5Data"]
        data_layer = body.get("data_layer", data_layers[0] if data_layers else None)
        if data_layer not in data_layers:
            raise ConfigError(f"{label}.data_layer: {data_layer!r} is not an HDF5Data layer")
        keep_best = body.get("keep_best", False)
        if not isinstance(keep_best, bool):
            raise ConfigError(f"{label}.keep_best: must be true or false, got {keep_best!r}")
        return {"validation": ValidationConfig(
            every=every, source=source, data_layer=data_layer,
            batch_size=require_int(body.get("batch_size", 0), f"{label}.batch_size"),
            max_batches=require_int(body.get("max_batches", 0), f"{label}.max_batches"),
            keep_best=keep_best,
        )}

    @classmethod
    def from_config(cls, coffee: CoffeeConfig) -> ValidationPerformance | None:
        val = coffee.validation
        return None if val is None else cls(val.every, val.data_layer, val.max_batches,
                                            val.keep_best)

    def run(self, context: BreakContext, iteration: int) -> None:
        net = context.validation_net()
        data_layer = net.layer(self.data_layer)
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
        lounge = context.lounge
        previous_best = lounge.best("validation/loss")
        if len(totals) > 1:
            # Per-layer series beside the total; a layer named "loss" would be the total's name.
            for name, value in totals.items():
                if name != "loss":
                    lounge.record(f"validation/{name}", iteration, value / n_batches)
        lounge.record("validation/loss", iteration, loss)
        context.solver.validated(loss, previous_best)
        context.log(f"iter {iteration:>8d}  validation loss {loss:12.4f} "
                    f"({n_batches * net.batch_size} images)")
        if self.keep_best and math.isfinite(loss) and (previous_best is None
                                                       or loss < previous_best):
            context.log(f"iter {iteration:>8d}  best validation loss so far: kept "
                        f"{context.snapshot_best()}")


@register_break("snapshot")
class Snapshot(CoffeeBreak):
    """Writes a verified snapshot (the trainer refuses to snapshot non-finite parameters)."""

    fields: ClassVar[tuple[str, ...]] = ("every", "keep")

    @classmethod
    def settings(cls, body: dict[str, Any], label: str, every: int,
                 layers: list[LayerConfig]) -> dict[str, Any]:
        return {"snapshot_every": every,
                "keep_snapshots": require_int(body.get("keep", 3), f"{label}.keep", 1)}

    @classmethod
    def from_config(cls, coffee: CoffeeConfig) -> Snapshot:
        return cls(coffee.snapshot_every)

    def run(self, context: BreakContext, iteration: int) -> None:
        context.snapshot()
