"""HDF5Output: appends its bottoms to an HDF5 file, one dataset per bottom, written atomically."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import h5py

from mochapy.errors import DataError
from mochapy.layers.base import Layer, LayerConfig, register_layer


@register_layer
@dataclass(frozen=True)
class HDF5OutputConfig(LayerConfig):
    filename: str = ""
    force_overwrite: bool = False

    type_name = "HDF5Output"
    is_sink = True
    n_bottoms = (1, None)
    n_tops = 0

    def validate(self) -> None:
        super().validate()
        self.require(bool(self.filename), "filename", "must name the output file")


class HDF5OutputLayer(Layer):
    """Rows go to a temporary file beside the target; `close()` renames it into place."""

    config: HDF5OutputConfig

    def setup(self) -> None:
        cfg = self.config
        if os.path.exists(cfg.filename) and not cfg.force_overwrite:
            raise DataError(f"{cfg.where}: {cfg.filename} exists (set force_overwrite: true)")
        folder = os.path.dirname(os.path.abspath(cfg.filename))
        fd, self.temp_path = tempfile.mkstemp(suffix=".h5.partial", dir=folder)
        os.close(fd)
        self.file = h5py.File(self.temp_path, "w")
        for blob in self.bottoms:
            self.file.create_dataset(
                blob.name, shape=(0, *blob.shape[1:]), maxshape=(None, *blob.shape[1:]),
                dtype=blob.data.dtype, chunks=True,
            )

    def forward(self) -> None:
        for blob in self.bottoms:
            dataset = self.file[blob.name]
            start = dataset.shape[0]
            dataset.resize(start + blob.batch_size, axis=0)
            dataset[start:] = self.backend.to_host(blob.data)

    def close(self) -> None:
        """Finish the file and move it to `filename` (nothing appears there before this)."""
        if self.file:
            self.file.flush()
            self.file.close()
            self.file = None
            os.replace(self.temp_path, self.config.filename)

    def discard(self) -> None:
        """Drop the partial file, e.g. when the run fails."""
        if self.file:
            self.file.close()
            self.file = None
            os.unlink(self.temp_path)


HDF5OutputConfig.layer_class = HDF5OutputLayer
