"""Batches streamed from HDF5 files larger than memory, shuffled reproducibly, resumable.

The rows of the files are cut into chunks (contiguous rows of one file, read with one HDF5 slice
each). Every epoch visits the chunks in a permuted order; consecutive chunks of that order form a
window (the shuffle buffer) whose rows are permuted again before they are served. Both
permutations come from one base seed drawn from the layer's generator and the (epoch, window)
numbers, so the whole stream is a pure function of (base seed, epoch, position): a snapshot needs
only those three numbers to resume bit-identically. While batches are served from one window, a
background thread reads the next one, so at most two windows are ever in memory, whatever the
data set's size.

Without shuffling the stream is the rows in file order, as an in-memory read would serve them.
"""

from __future__ import annotations

import bisect
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import h5py
import numpy as np

from mochapy.errors import DataError


@dataclass(frozen=True)
class Chunk:
    """Rows [start, stop) of one file."""

    path: str
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def plan_chunks(files: list[tuple[str, int]], chunk_rows: int, limit: int = 0) -> list[Chunk]:
    """Chunks of at most `chunk_rows` rows over `files` ((path, rows) in order); chunks never
    span two files. `limit` > 0 keeps only the first `limit` rows."""
    chunks, remaining = [], limit or sum(rows for _, rows in files)
    for path, rows in files:
        rows = min(rows, remaining)
        for start in range(0, rows, chunk_rows):
            chunks.append(Chunk(path, start, min(start + chunk_rows, rows)))
        remaining -= rows
        if remaining <= 0:
            break
    return chunks


class StreamingBatches:
    """Serves `batch_size` rows of each dataset in `names` per call of `fill`, epoch after epoch.

    chunks: from plan_chunks; window_chunks: chunks per shuffle window; rng: the layer's own
    generator, from which the base seed is drawn once.
    """

    def __init__(self, chunks: list[Chunk], names: list[str], batch_size: int, shuffle: bool,
                 rng: np.random.Generator, window_chunks: int, dtype: np.dtype, where: str) -> None:
        if not chunks:
            raise DataError(f"{where}: no rows to stream")
        self.chunks = chunks
        self.names = list(names)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.window_chunks = max(1, window_chunks)
        self.dtype = np.dtype(dtype)
        self.where = where
        self.n_rows = sum(chunk.rows for chunk in chunks)
        self.base_seed = int(rng.integers(2**63))
        self.epoch = 0
        self.position = 0
        self._windows: dict[tuple[int, int], list[np.ndarray]] = {}
        self._pending: dict[tuple[int, int], Future] = {}
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="mochapy-prefetch")
        self._plans: dict[int, tuple[list[list[Chunk]], list[int]]] = {}
        self.row_shapes = self._row_shapes()

    def _row_shapes(self) -> list[tuple[int, ...]]:
        first = self.chunks[0]
        try:
            with h5py.File(first.path, "r") as handle:
                return [tuple(handle[name].shape[1:]) for name in self.names]
        except (OSError, KeyError) as exc:
            raise DataError(f"{self.where}: cannot read {first.path}: "
                            f"{' '.join(str(exc).split())}") from None

    def _epoch_plan(self, epoch: int) -> tuple[list[list[Chunk]], list[int]]:
        """The windows of `epoch` (lists of chunks) and the epoch position where each starts.

        Kept for the two newest epochs: the prefetch thread may look one epoch ahead."""
        plan = self._plans.get(epoch)
        if plan is None:
            order = (np.random.default_rng([self.base_seed, epoch]).permutation(len(self.chunks))
                     if self.shuffle else np.arange(len(self.chunks)))
            windows = [[self.chunks[i] for i in order[w:w + self.window_chunks]]
                       for w in range(0, len(order), self.window_chunks)]
            starts = np.cumsum([0] + [sum(c.rows for c in win) for win in windows[:-1]])
            plan = (windows, [int(s) for s in starts])
            self._plans = {e: p for e, p in self._plans.items() if e >= epoch - 1}
            self._plans[epoch] = plan
        return plan

    def _load(self, epoch: int, window: int) -> list[np.ndarray]:
        """Read one window's rows of every dataset (runs on the prefetch thread too)."""
        chunks = self._epoch_plan(epoch)[0][window]
        arrays = []
        for name in self.names:
            parts = []
            for chunk in chunks:
                try:
                    with h5py.File(chunk.path, "r") as handle:
                        parts.append(handle[name][chunk.start:chunk.stop])
                except (OSError, KeyError) as exc:
                    raise DataError(f"{self.where}: cannot read {chunk.path}:{name}: "
                                    f"{' '.join(str(exc).split())}") from None
                if not np.isfinite(parts[-1]).all():
                    raise DataError(f"{self.where}: {chunk.path}:{name} holds NaN or Inf in rows "
                                    f"{chunk.start}-{chunk.stop - 1}")
            rows = np.concatenate(parts).astype(self.dtype, copy=False)
            if self.shuffle:
                shuffled = np.random.default_rng([self.base_seed, epoch, window])
                rows = rows[shuffled.permutation(len(rows))]
            arrays.append(rows)
        return arrays

    def _window(self, epoch: int, window: int) -> list[np.ndarray]:
        """The rows of (epoch, window), from the prefetch thread if it read them; then start
        reading the window after it."""
        key = (epoch, window)
        if key not in self._windows:
            pending = self._pending.pop(key, None)
            self._windows = {key: pending.result() if pending else self._load(*key)}
            self._pending.clear()
            windows, _ = self._epoch_plan(epoch)
            after = (epoch, window + 1) if window + 1 < len(windows) else (epoch + 1, 0)
            self._pending[after] = self._reader.submit(self._load, *after)
        return self._windows[key]

    def fill(self, hosts: list[np.ndarray]) -> None:
        """Write the next `batch_size` rows of each dataset into `hosts` (wrapping epochs)."""
        filled = 0
        while filled < self.batch_size:
            windows, starts = self._epoch_plan(self.epoch)
            window = bisect.bisect_right(starts, self.position) - 1
            arrays = self._window(self.epoch, window)
            offset = self.position - starts[window]
            take = min(self.batch_size - filled, len(arrays[0]) - offset)
            for host, rows in zip(hosts, arrays, strict=True):
                host[filled:filled + take] = rows[offset:offset + take]
            filled += take
            self.position += take
            if self.position == self.n_rows:
                self.epoch += 1
                self.position = 0

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"epoch": np.array(self.epoch), "position": np.array(self.position),
                "base_seed": np.array(self.base_seed, dtype=np.uint64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if "base_seed" not in state:
            raise DataError(f"{self.where}: the snapshot's data position was saved by an "
                            "in-memory reader, not a streaming one")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.base_seed = int(state["base_seed"])
        self._plans, self._windows, self._pending = {}, {}, {}
