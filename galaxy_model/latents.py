"""Latent embeddings of a dataset, written to HDF5 with each row's provenance."""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from galaxy_model.dataset import GalaxyDataset
from galaxy_model.model import GalaxyVAE
from mochapy.atomic import write_hdf5_atomically
from mochapy.errors import DataError


@dataclass
class Latents:
    mean: np.ndarray  # g_mu(x), (N, d)
    sd: np.ndarray  # g_sigma(x), (N, d)
    provenance: list[str]


def encode_dataset(model: GalaxyVAE, dataset: GalaxyDataset) -> Latents:
    mean, sd = model.encode(dataset.data)
    return Latents(mean, sd, list(dataset.provenance))


def write_latents(path: str, latents: Latents, **attrs: str) -> None:
    """`mean` and `sd` (N, d) float32 and `provenance` strings; attrs say which run and data."""
    write_hdf5_atomically(
        path,
        {
            "mean": latents.mean.astype(np.float32),
            "sd": latents.sd.astype(np.float32),
            "provenance": np.array(latents.provenance, dtype=h5py.string_dtype()),
        },
        {"description": "q(z|x) = N(mean, sd^2) per image", **attrs},
    )


def read_latents(path: str) -> Latents:
    """What write_latents wrote (notebooks, benchmarks/scale.py --compare-encode); DataError
    naming the file if it cannot be read."""
    try:
        with h5py.File(path, "r") as handle:
            provenance = [p.decode() if isinstance(p, bytes) else str(p)
                          for p in handle["provenance"][()]]
            return Latents(handle["mean"][()], handle["sd"][()], provenance)
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read latents from {path}: {' '.join(str(exc).split())}") from None
