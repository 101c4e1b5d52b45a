"""MemoryData: batches from arrays handed over in Python (`Net(..., memory_data={...})`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mochapy.errors import DataError
from mochapy.layers.base import Layer, LayerConfig, register_layer
from mochapy.layers.batching import BatchOrder


@register_layer
@dataclass(frozen=True)
class MemoryDataConfig(LayerConfig):
    batch_size: int = 0
    shuffle: bool = False

    type_name = "MemoryData"
    is_source = True
    n_bottoms = 0
    n_tops = (1, None)

    def validate(self) -> None:
        super().validate()
        self.require(self.batch_size > 0, "batch_size", "must be a positive integer")


class MemoryDataLayer(Layer):
    config: MemoryDataConfig

    def setup(self) -> None:
        cfg = self.config
        given = self.ctx.memory_data.get(cfg.name)
        if given is None:
            raise DataError(f"{cfg.where}: no arrays given (pass memory_data={{name: arrays}})")
        self.arrays = []
        for name in cfg.tops:
            if name not in given:
                raise DataError(f"{cfg.where}: no array given for top {name!r}")
            array = np.asarray(given[name], dtype=self.backend.dtype)
            if array.ndim < 1 or len(array) == 0 or not np.isfinite(array).all():
                raise DataError(f"{cfg.where}: array for {name!r} is empty or not finite")
            self.arrays.append(array)
            self.make_top(name, (cfg.batch_size, *array.shape[1:]))
        if len({len(a) for a in self.arrays}) > 1:
            raise DataError(f"{cfg.where}: arrays for {list(cfg.tops)} differ in length")
        self.order = BatchOrder(len(self.arrays[0]), cfg.batch_size, cfg.shuffle,
                                self.ctx.rng(cfg.name))

    def forward(self) -> None:
        rows = self.order.next()
        for array, top in zip(self.arrays, self.tops, strict=False):
            self.backend.copy_from_host(top.data, array[rows])

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.order.load_state_dict(state)


MemoryDataConfig.layer_class = MemoryDataLayer
