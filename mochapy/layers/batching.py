"""Batch order for data layers: sequential or shuffled each epoch, wrapping around, resumable."""

from __future__ import annotations

import numpy as np

from mochapy.layers.base import rng_state, set_rng_state


class BatchOrder:
    """Yields index arrays of `batch_size` rows out of `n`, epoch after epoch.

    Shuffling draws a fresh permutation per epoch from a private generator; `state_dict` captures
    the position and the generator so a resumed run sees the very same batches.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, rng: np.random.Generator) -> None:
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = rng
        self.epoch = 0
        self.position = 0
        self.order = self._new_order()

    def _new_order(self) -> np.ndarray:
        return self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)

    def next(self) -> np.ndarray:
        picked = []
        need = self.batch_size
        while need:
            take = min(need, self.n - self.position)
            picked.append(self.order[self.position : self.position + take])
            self.position += take
            need -= take
            if self.position == self.n:
                self.epoch += 1
                self.position = 0
                self.order = self._new_order()
        return np.concatenate(picked) if len(picked) > 1 else picked[0]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "epoch": np.array(self.epoch),
            "position": np.array(self.position),
            "order": self.order,
            "rng": rng_state(self.rng),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.order = np.asarray(state["order"])
        set_rng_state(self.rng, state["rng"])
