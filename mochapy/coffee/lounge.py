"""The coffee lounge: statistics gathered during training, kept in HDF5."""

from __future__ import annotations

import h5py
import numpy as np

from mochapy.atomic import read_hdf5_arrays, write_hdf5_atomically


class CoffeeLounge:
    """Named series of (iteration, value) rows, e.g. "train/loss" or "validation/loss"."""

    def __init__(self) -> None:
        self.series: dict[str, list[tuple[float, float]]] = {}

    def record(self, name: str, iteration: int, value: float) -> None:
        self.series.setdefault(name, []).append((float(iteration), float(value)))

    def last(self, name: str) -> float | None:
        rows = self.series.get(name)
        return rows[-1][1] if rows else None

    def best(self, name: str) -> float | None:
        rows = self.series.get(name)
        return min(v for _, v in rows) if rows else None

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64).reshape(-1, 2) for k, v in self.series.items()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.series = {
            k: [(float(i), float(v)) for i, v in np.asarray(a).reshape(-1, 2)]
            for k, a in arrays.items()
        }

    @classmethod
    def load(cls, path: str) -> CoffeeLounge:
        """Read a statistics.h5 written by `save`."""
        with h5py.File(path, "r") as handle:
            arrays = read_hdf5_arrays(handle)
        lounge = cls()
        lounge.load_arrays(arrays)
        return lounge

    def save(self, path: str) -> None:
        """statistics.h5: one (K, 2) float64 dataset [iteration, value] per statistic name."""
        write_hdf5_atomically(path, self.as_arrays(), {"columns": "iteration,value"})
