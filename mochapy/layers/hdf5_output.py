"""HDF5Output: appends its bottoms to an HDF5 file, one dataset per bottom, written atomically.

`filename` is taken relative to the YAML file's folder. The file is opened at the first forward
pass (so `mochapy check` writes nothing) as a temporary file beside the target, and appears
under its name only when the run finishes (`close()`); a failed run discards it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import h5py

from mochapy.atomic import PARTIAL_PREFIX
from mochapy.errors import DataError
from mochapy.layers.base import Layer, LayerConfig, register_layer


@register_layer
@dataclass(frozen=True)
class HDF5OutputConfig(LayerConfig):
    filename: str = ""
    force_overwrite: bool = False
    base_dir: str = "."  # where a relative filename is taken from (the YAML file's folder)

    type_name = "HDF5Output"
    is_sink = True
    n_bottoms = (1, None)

    def validate(self) -> None:
        super().validate()
        self.require(bool(self.filename), "filename", "must name the output file")

    @property
    def path(self) -> str:
        return os.path.join(self.base_dir, self.filename)


class HDF5OutputLayer(Layer):
    """Rows go to a temporary file beside the target; `close()` renames it into place."""

    config: HDF5OutputConfig

    def setup(self) -> None:
        cfg = self.config
        if os.path.isdir(cfg.path):
            raise DataError(f"{cfg.where}: {cfg.path} is a folder; name a file")
        if os.path.lexists(cfg.path) and not cfg.force_overwrite:
            raise DataError(f"{cfg.where}: {cfg.path} exists (set force_overwrite: true)")
        self.file: h5py.File | None = None
        self.temp_path = ""

    def _open(self) -> h5py.File:
        folder = os.path.dirname(os.path.abspath(self.config.path))
        fd, self.temp_path = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=".h5", dir=folder)
        os.close(fd)
        handle = h5py.File(self.temp_path, "w")
        for blob in self.bottoms:
            handle.create_dataset(
                blob.name, shape=(0, *blob.shape[1:]), maxshape=(None, *blob.shape[1:]),
                dtype=blob.data.dtype, chunks=True,
            )
        return handle

    def forward(self) -> None:
        if self.file is None:
            self.file = self._open()
        for blob in self.bottoms:
            dataset = self.file[blob.name]
            start = dataset.shape[0]
            dataset.resize(start + blob.batch_size, axis=0)
            dataset[start:] = self.backend.to_host(blob.data)

    def close(self) -> None:
        """Finish the file and move it to its name (nothing appears there before this)."""
        if self.file is not None:
            self.file.flush()
            self.file.close()
            self.file = None
            os.chmod(self.temp_path, 0o666 & ~_umask())  # mkstemp makes 0600
            os.replace(self.temp_path, self.config.path)

    def discard(self) -> None:
        """Drop the partial file, e.g. when the run fails."""
        if self.file is not None:
            self.file.close()
            self.file = None
            os.unlink(self.temp_path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


HDF5OutputConfig.layer_class = HDF5OutputLayer
