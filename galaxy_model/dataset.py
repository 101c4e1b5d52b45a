"""The one galaxy dataset format that every command reads and writes (HDF5).

Datasets in the file: `data` float32 (N, C, S, S) with C in {1, 3}, the normalised images that
mochapy's HDF5Data layer reads directly; optionally `ivar` (inverse variance of `data`) and `mask`
(uint8, 1 = bad pixel) of the same shape; `scale` float32 (N,) and `offset` float32 (N, C), which
undo the normalisation: raw = data * scale + offset; `provenance`, one UTF-8 string per image (file
name, HDU, or "synth seed=S index=I"). File attributes say where the data came from and how it was
normalised (source, normalisation, size, bands, stamp_side_in_r50, created_by, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mochapy.atomic import write_hdf5_atomically
from mochapy.errors import DataError
from mochapy.limits import check_hdf5_links, check_hdf5_node
from mochapy.sharded import Manifest, check_shard, open_sharded

VALID_BANDS = (1, 3)


@dataclass
class GalaxyDataset:
    """Normalised galaxy stamps with what is needed to undo the normalisation and trace each row."""

    data: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    provenance: list[str]
    ivar: np.ndarray | None = None
    mask: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        count = len(self.data)
        self.scale = np.asarray(self.scale, dtype=np.float32).reshape(count)
        self.offset = np.asarray(self.offset, dtype=np.float32).reshape(count, -1)
        self.provenance = [str(item) for item in self.provenance]
        if self.ivar is not None:
            self.ivar = np.asarray(self.ivar, dtype=np.float32)
        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def bands(self) -> int:
        return self.data.shape[1]

    @property
    def size(self) -> int:
        return self.data.shape[-1]

    def denormalise(self, index: int | slice | np.ndarray) -> np.ndarray:
        """Images in their original (raw) units: data * scale + offset, for one row or several."""
        data = self.data[index]
        scale = self.scale[index]
        offset = self.offset[index]
        return data * np.asarray(scale)[..., None, None, None] + np.asarray(offset)[..., None, None]

    def subset(self, index: slice | np.ndarray) -> GalaxyDataset:
        """The rows `index` (a slice, integer array or boolean mask) as a new dataset."""
        rows = np.arange(len(self))[index]
        return GalaxyDataset(
            data=self.data[rows],
            scale=self.scale[rows],
            offset=self.offset[rows],
            provenance=[self.provenance[i] for i in rows],
            ivar=None if self.ivar is None else self.ivar[rows],
            mask=None if self.mask is None else self.mask[rows],
            attrs=dict(self.attrs),
        )


def concatenate(parts: list[GalaxyDataset]) -> GalaxyDataset:
    """The rows of `parts` in order, as one dataset; the first part's attributes describe the
    whole. ivar is kept only if every part has it; a part without a mask has no bad pixel."""
    def joined(name: str) -> np.ndarray | None:
        arrays = [getattr(part, name) for part in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    mask = None
    if any(part.mask is not None for part in parts):
        mask = np.concatenate([np.zeros(part.data.shape, np.uint8) if part.mask is None
                               else part.mask for part in parts])
    return GalaxyDataset(
        data=joined("data"), scale=joined("scale"), offset=joined("offset"),
        provenance=[item for part in parts for item in part.provenance],
        ivar=joined("ivar"), mask=mask, attrs=dict(parts[0].attrs),
    )


def _attribute_value(value: Any) -> Any:
    """HDF5 attributes hold numbers, strings and arrays; anything else is stored as text."""
    if isinstance(value, (str, int, float, bool, np.generic, np.ndarray)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return np.asarray(value)
    return str(value)


def _validate(ds: GalaxyDataset, where: str) -> None:
    data = ds.data
    if data.ndim != 4 or data.shape[1] not in VALID_BANDS or data.shape[2] != data.shape[3]:
        raise DataError(
            f"{where}: `data` must have shape (N, C, S, S) with C in {{1, 3}}, got {data.shape}"
        )
    if data.shape[0] == 0:
        raise DataError(f"{where}: `data` holds no images (N = 0)")
    count, bands = data.shape[:2]
    if ds.scale.shape != (count,) or ds.offset.shape != (count, bands):
        raise DataError(
            f"{where}: `scale` {ds.scale.shape} / `offset` {ds.offset.shape} do not match "
            f"`data` {data.shape} (want ({count},) and ({count}, {bands}))"
        )
    if len(ds.provenance) != count:
        raise DataError(f"{where}: {len(ds.provenance)} provenance entries for {count} images")
    for name in ("ivar", "mask"):
        extra = getattr(ds, name)
        if extra is not None and extra.shape != data.shape:
            raise DataError(f"{where}: `{name}` shape {extra.shape} != `data` shape {data.shape}")


def write_dataset(path: str | os.PathLike, ds: GalaxyDataset) -> None:
    """Write `ds` to `path` atomically (temporary file in the same directory, fsync, rename)."""
    path = Path(path)
    _validate(ds, str(path))
    if not np.isfinite(ds.data).all():
        raise DataError(f"{path}: refusing to write `data` with NaN or Inf values")
    items = {"data": ds.data}
    if ds.ivar is not None:
        items["ivar"] = ds.ivar
    if ds.mask is not None:
        items["mask"] = ds.mask
    items["scale"] = ds.scale
    items["offset"] = ds.offset
    items["provenance"] = np.array(ds.provenance, dtype=h5py.string_dtype("utf-8"))
    attrs = {key: _attribute_value(value) for key, value in ds.attrs.items()}
    write_hdf5_atomically(str(path), items, attrs)


def _read_optional(f: h5py.File, name: str, rows: slice, shape: tuple[int, ...],
                   where: Path) -> np.ndarray | None:
    """Rows of dataset `name` if the file has it; it must be shaped `shape` in the file."""
    if name not in f:
        return None
    if f[name].shape != shape:
        raise DataError(f"{where}: `{name}` has shape {f[name].shape}, expected {shape}")
    return check_hdf5_node(f, name, str(where), rows.stop)[rows]


def read_dataset(path: str | os.PathLike, limit: int | None = None,
                 start: int = 0) -> GalaxyDataset:
    """Read a dataset file or sharded directory (`limit` images from row `start` when given);
    DataError names what is wrong.

    Files that hold only `data` (e.g. made by other tools) are accepted: scale defaults to 1,
    offset to 0 and provenance to "<file> row I".
    """
    path = Path(path)
    if path.is_dir():
        return read_sharded(path, limit)
    if not path.is_file():
        raise DataError(f"{path}: no such dataset file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
    try:
        with f:
            check_hdf5_links(f, str(path))
            if "data" not in f or not isinstance(f["data"], h5py.Dataset):
                raise DataError(f"{path}: no `data` dataset (found: {sorted(f.keys())})")
            shape = f["data"].shape
            if len(shape) != 4 or shape[1] not in VALID_BANDS or shape[2] != shape[3]:
                raise DataError(
                    f"{path}: `data` must have shape (N, C, S, S) with C in {{1, 3}}, got {shape}"
                )
            available = max(shape[0] - start, 0)
            count = available if limit is None else min(available, max(int(limit), 0))
            if count == 0:
                raise DataError(f"{path}: `data` holds no images (N = 0) from row {start}")
            rows = slice(start, start + count)
            node = check_hdf5_node(f, "data", str(path), start + count)
            if not np.issubdtype(node.dtype, np.floating):
                raise DataError(
                    f"{path}: `data` holds {node.dtype} values, not normalised floats; a galaxy "
                    "dataset is made by `galaxy-model prepare`, which reads 8-bit images "
                    "(and scales them to 0-1 first)"
                )
            data = node[rows].astype(np.float32, copy=False)
            if not np.isfinite(data).all():
                bad = int(np.flatnonzero(~np.isfinite(data).reshape(count, -1).all(axis=1))[0])
                raise DataError(f"{path}: `data` holds NaN or Inf values (first in image {bad})")
            scale = _read_optional(f, "scale", rows, shape[:1], path)
            offset = _read_optional(f, "offset", rows, shape[:2], path)
            provenance = _read_optional(f, "provenance", rows, shape[:1], path)
            ds = GalaxyDataset(
                data=data,
                scale=np.ones(count, np.float32) if scale is None else scale,
                offset=np.zeros((count, shape[1]), np.float32) if offset is None else offset,
                provenance=(
                    [f"{path.name} row {i}" for i in range(start, start + count)]
                    if provenance is None
                    else [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in provenance]
                ),
                ivar=_read_optional(f, "ivar", rows, shape, path),
                mask=_read_optional(f, "mask", rows, shape, path),
                attrs={key: _plain(value) for key, value in f.attrs.items()},
            )
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: unreadable dataset (truncated or corrupt?): {exc}") from exc
    _validate(ds, str(path))
    _check_scale(ds, str(path))
    _check_ivar(ds, str(path), start)
    return ds


def _check_scale(ds: GalaxyDataset, where: str) -> None:
    """A zero, negative or non-finite scale (or offset) would turn images into NaN/Inf when a
    model maps them back to sky units: refuse it, naming the first image."""
    for name, values in (("scale", ds.scale), ("offset", ds.offset)):
        bad = ~np.isfinite(values) if name == "offset" else ~(np.isfinite(values) & (values > 0))
        if bad.any():
            row = int(np.argwhere(bad)[0, 0])
            want = "finite" if name == "offset" else "positive and finite"
            raise DataError(f"{where}: `{name}` must be {want} (image {row} has "
                            f"{values[row].tolist()})")


def _check_ivar(ds: GalaxyDataset, where: str, first_row: int) -> None:
    """A negative or NaN inverse variance is no noise level (0 is: no information): refuse it,
    naming the first image, band and pixel, before any fit or loss weighs by it."""
    if ds.ivar is None:
        return
    bad = ~(np.isfinite(ds.ivar) & (ds.ivar >= 0))
    if bad.any():
        image, band, y, x = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{where}: `ivar` holds negative, NaN or Inf values (first at image "
                        f"{first_row + image}, band {band + 1}, x={x}, y={y}: "
                        f"{ds.ivar[image, band, y, x]}; use 0 for no information)")


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python objects (bytes decoded, 0-d arrays unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_shard(manifest: Manifest, index: int) -> GalaxyDataset:
    """One shard, after checking it against the manifest (rows, datasets and checksum)."""
    check_shard(manifest, index, verify_checksum=True)
    return read_dataset(manifest.path(index))


def read_sharded(directory: str | os.PathLike, limit: int | None = None) -> GalaxyDataset:
    """A whole sharded data set in memory (the first `limit` rows when given): for the commands
    that need every image at once (figures, montage) on data sets that fit."""
    manifest = open_sharded(str(directory))
    parts, remaining = [], manifest.n_rows if limit is None else int(limit)
    for index in range(len(manifest.shards)):
        if remaining <= 0:
            break
        part = read_shard(manifest, index)
        parts.append(part if len(part) <= remaining else part.subset(slice(0, remaining)))
        remaining -= len(parts[-1])
    return concatenate(parts)
