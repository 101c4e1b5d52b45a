"""HDF5Data: batches from HDF5 files, one top per dataset name (Mocha's source-list convention)."""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from mochapy.data_sources import resolve_source
from mochapy.errors import DataError
from mochapy.layers.base import Layer, LayerConfig, register_layer
from mochapy.layers.batching import BatchOrder
from mochapy.limits import check_array, check_hdf5_node
from mochapy.sharded import open_sharded, sharded_directory
from mochapy.streaming import StreamingBatches, plan_chunks


@register_layer
@dataclass(frozen=True)
class HDF5DataConfig(LayerConfig):
    source: str = ""
    batch_size: int = 0
    shuffle: bool = False
    limit: int = 0  # 0: every row; else the first `limit` rows (quick runs, smoke tests)
    base_dir: str = "."  # where relative sources are looked up (set to the YAML file's folder)
    # A sharded directory is streamed, never loaded whole: rows are read `chunk_rows` at a time
    # and shuffled within windows of `window_chunks` chunks (mochapy.streaming).
    chunk_rows: int = 1024
    window_chunks: int = 8

    type_name = "HDF5Data"
    is_source = True
    n_bottoms = 0
    n_tops = (1, None)

    def validate(self) -> None:
        super().validate()
        self.require(bool(self.source), "source", "must name an HDF5 file or a source list")
        self.require(self.batch_size > 0, "batch_size", "must be a positive integer")
        self.require(self.limit >= 0, "limit", "must be >= 0")
        self.require(self.chunk_rows > 0, "chunk_rows", "must be a positive integer")
        self.require(self.window_chunks > 0, "window_chunks", "must be a positive integer")


def read_rows(path: str, dataset: str, limit: int, where: str) -> np.ndarray:
    """Read one dataset from one file, checking it exists, is numeric and finite."""
    try:
        with h5py.File(path, "r") as handle:
            if handle.get(dataset, getlink=True) is None:
                raise DataError(f"{where}: {path} has no dataset {dataset!r}")
            node = check_hdf5_node(handle, dataset, where, limit)
            if not isinstance(node, h5py.Dataset) or node.ndim < 1 or node.shape[0] == 0:
                raise DataError(f"{where}: {path}:{dataset} is empty or not an array")
            if not np.issubdtype(node.dtype, np.number):
                raise DataError(f"{where}: {path}:{dataset} is not numeric ({node.dtype})")
            # integers: 8-bit images by mistake, except bad-pixel flags (`mask`, 1 = bad), whose
            # values are exact in any float type
            if not np.issubdtype(node.dtype, np.floating) and dataset != "mask":
                raise DataError(
                    f"{where}: {path}:{dataset} holds integers ({node.dtype}); HDF5Data reads "
                    "floating-point data as stored, so convert it first (0-255 images: divide "
                    "by 255, or make a galaxy dataset with `galaxy-model prepare`)"
                )
            rows = node[: limit or None]
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise DataError(f"{where}: cannot read {path}: {' '.join(str(exc).split())}") from None
    if not np.isfinite(rows).all():
        bad = int(np.argwhere(~np.isfinite(rows.reshape(len(rows), -1)))[0, 0])
        raise DataError(f"{where}: {path}:{dataset} holds NaN or Inf (first in row {bad})")
    return rows


class HDF5DataLayer(Layer):
    """Loads the named datasets of every listed file into memory, then serves batches."""

    config: HDF5DataConfig

    def setup(self) -> None:
        cfg = self.config
        self.stream = None
        directory = sharded_directory(cfg.source, cfg.base_dir)
        if directory is not None:
            self._setup_streaming(directory)
            return
        files = resolve_source(cfg.source, cfg.where, cfg.base_dir)
        self.arrays = []
        for name in cfg.tops:
            parts, remaining = [], cfg.limit
            for path in files:
                rows = read_rows(path, name, remaining, cfg.where)
                if parts and rows.shape[1:] != parts[0].shape[1:]:
                    raise DataError(
                        f"{cfg.where}: {path}:{name} rows have shape {rows.shape[1:]}, "
                        f"earlier files {parts[0].shape[1:]}"
                    )
                parts.append(rows)
                if cfg.limit:
                    remaining -= len(rows)
                    if remaining <= 0:
                        break
            shape = (sum(len(part) for part in parts), *parts[0].shape[1:])
            check_array(shape, np.dtype(self.backend.dtype).itemsize,
                        f"{cfg.where}: dataset {name!r} of {len(files)} file(s)", count=2)
            self.arrays.append(np.concatenate(parts).astype(self.backend.dtype, copy=False))
        counts = {len(a) for a in self.arrays}
        if len(counts) > 1:
            raise DataError(f"{cfg.where}: datasets {list(cfg.tops)} have different row counts")
        self.n_rows = counts.pop()
        if self.n_rows < cfg.batch_size:
            raise DataError(f"{cfg.where}: batch_size {cfg.batch_size} is larger than the data "
                            f"({self.n_rows} rows in {cfg.source}); lower batch_size")
        self.order = BatchOrder(self.n_rows, cfg.batch_size, cfg.shuffle, self.ctx.rng(cfg.name))
        self.host_batches = [np.empty((cfg.batch_size, *a.shape[1:]), a.dtype) for a in self.arrays]
        for name, array in zip(cfg.tops, self.arrays, strict=False):
            self.make_top(name, (cfg.batch_size, *array.shape[1:]))

    def _setup_streaming(self, directory: str) -> None:
        """Serve batches from a sharded directory through a prefetching StreamingBatches."""
        cfg = self.config
        manifest = open_sharded(directory)
        missing = [name for name in cfg.tops if name not in manifest.datasets]
        if missing:
            raise DataError(f"{cfg.where}: sharded data set {directory} has no dataset "
                            f"{missing[0]!r} (has {sorted(manifest.datasets)})")
        files = [(manifest.path(shard), shard.rows) for shard in manifest.shards]
        chunks = plan_chunks(files, cfg.chunk_rows, cfg.limit)
        self.stream = StreamingBatches(chunks, list(cfg.tops), cfg.batch_size, cfg.shuffle,
                                       self.ctx.rng(cfg.name), cfg.window_chunks,
                                       self.backend.dtype, cfg.where)
        self.n_rows = self.stream.n_rows
        if self.n_rows < cfg.batch_size:
            raise DataError(f"{cfg.where}: batch_size {cfg.batch_size} is larger than the data "
                            f"({self.n_rows} rows in {cfg.source}); lower batch_size")
        self.order = self.stream
        self.host_batches = [np.empty((cfg.batch_size, *shape), self.backend.dtype)
                             for shape in self.stream.row_shapes]
        for name, shape in zip(cfg.tops, self.stream.row_shapes, strict=True):
            self.make_top(name, (cfg.batch_size, *shape))

    def forward(self) -> None:
        if self.stream is not None:
            self.stream.fill(self.host_batches)
        else:
            rows = self.order.next()
            for array, host in zip(self.arrays, self.host_batches, strict=False):
                np.take(array, rows, axis=0, out=host)
        for host, top in zip(self.host_batches, self.tops, strict=False):
            self.backend.copy_from_host(top.data, host)

    @property
    def epoch(self) -> int:
        return self.order.epoch

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.order.load_state_dict(state)


HDF5DataConfig.layer_class = HDF5DataLayer
