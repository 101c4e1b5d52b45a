"""The built-in data splits: `builtin:train`, `builtin:heldout` (synthetic) and `builtin:real`.

    train    20,000 one-band synthetic galaxies, seed 1
    heldout   1,000 one-band synthetic galaxies, seed 2
    valid    10,000 one-band synthetic galaxies, seed 3
    train-large  60,000 one-band synthetic galaxies, seed 4
    gz-train 43,444 Galaxy-Zoo-2-like synthetic galaxies (population gz-v1), seed 11
    gz-valid  1,000 of them, seed 12
    gz-heldout 1,000 of them, seed 13 (the counts of the poster's training and test sets)
              (each seed is an independent random stream: no image is shared between splits)
    real     the resolved galaxies of the Hubble eXtreme Deep Field picture that scikit-image
              ships (galaxy_model.hubble.build_real_split)

Each split is built on first use into the cache directory ($GALAXY_MODEL_CACHE, else
~/.cache/galaxy_model) under a name that carries the generator version (population and ivar
version), n and seed, and reused afterwards. Building holds an exclusive fcntl lock next to the
file, so concurrent processes build it once, and the file appears atomically, so nobody reads it
half-written. A cached file that no longer reads back is rebuilt with a warning. The
synthetic splits' populations are galaxy_model.populations.SYNTH_V1 and GZ_V1 (docs/data.md).

`resolve_source("builtin:train")` returns the file's path; it is the `builtin` entry point of
`mochapy.data_sources`, so a net's HDF5Data layer can say `source: builtin:train`. `load(spec)`
returns a GalaxyDataset for a built-in spec or a plain .h5 path (every `--data` option uses it).

Smaller synthetic splits for tests and quick runs: $GALAXY_MODEL_BUILTIN_SIZES, e.g.
"train=200,heldout=50", overrides n (the file name changes with it, so the full splits are kept).
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from galaxy_model.dataset import GalaxyDataset, read_dataset, write_dataset
from galaxy_model.populations import GZ_V1, SYNTH_V1, Population
from galaxy_model.synth import generator_version, synthesize
from mochapy.errors import DataError

SCHEME = "builtin"
CACHE_ENV = "GALAXY_MODEL_CACHE"
SIZES_ENV = "GALAXY_MODEL_BUILTIN_SIZES"
REAL_VERSION = "xdf-v1"


@dataclass(frozen=True)
class SyntheticSplit:
    n: int
    seed: int
    population: Population = SYNTH_V1


SYNTHETIC_SPLITS = {
    "train": SyntheticSplit(n=20_000, seed=1),
    "heldout": SyntheticSplit(n=1_000, seed=2),
    "valid": SyntheticSplit(n=10_000, seed=3),
    "train-large": SyntheticSplit(n=60_000, seed=4),
    "gz-train": SyntheticSplit(n=43_444, seed=11, population=GZ_V1),
    "gz-valid": SyntheticSplit(n=1_000, seed=12, population=GZ_V1),
    "gz-heldout": SyntheticSplit(n=1_000, seed=13, population=GZ_V1),
}
SPLITS = (*SYNTHETIC_SPLITS, "real")


def cache_dir() -> Path:
    """Where built-in splits are kept: $GALAXY_MODEL_CACHE, else ~/.cache/galaxy_model."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "galaxy_model"


def _size_overrides() -> dict[str, int]:
    text = os.environ.get(SIZES_ENV, "").strip()
    overrides = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in SYNTHETIC_SPLITS or not value.strip().isdigit():
            raise DataError(
                f"${SIZES_ENV}: expected e.g. 'train=200,heldout=50' (splits: "
                f"{', '.join(SYNTHETIC_SPLITS)}), got {text!r}"
            )
        overrides[name.strip()] = max(int(value), 1)
    return overrides


def split_name(spec: str) -> str:
    """"builtin:train" (or "train") -> "train"; DataError naming the valid splits otherwise."""
    name = spec.split(":", 1)[1] if spec.startswith(f"{SCHEME}:") else spec
    if name not in SPLITS:
        valid = ", ".join(f"{SCHEME}:{split}" for split in SPLITS)
        raise DataError(f"unknown built-in data split {spec!r}; valid: {valid}")
    return name


def _split_file_and_builder(name: str) -> tuple[Path, Callable[[], GalaxyDataset]]:
    if name == "real":

        def build_real() -> GalaxyDataset:
            from galaxy_model.hubble import build_real_split

            return build_real_split()

        return cache_dir() / f"real-{REAL_VERSION}.h5", build_real
    split = SYNTHETIC_SPLITS[name]
    n = _size_overrides().get(name, split.n)
    version = generator_version(split.population)
    path = cache_dir() / f"{name}-{version}-n{n}-seed{split.seed}.h5"
    return path, lambda: synthesize(n, seed=split.seed, progress=True,
                                    population=split.population)


def _readable(path: Path) -> bool:
    """Whether a cached file reads back as a dataset (its first image is enough: files are only
    ever written whole, so a failure means outside damage)."""
    try:
        read_dataset(path, limit=1)
    except DataError:
        return False
    return True


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path`.lock for the duration (blocks until available)."""
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_source(spec: str) -> str:
    """Path of the built-in split `spec` ("builtin:train" ...), building it on first use."""
    path, build = _split_file_and_builder(split_name(spec))
    if path.is_file() and _readable(path):
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path):
        if path.is_file():
            if _readable(path):  # another process built it while we waited for the lock
                return str(path)
            warnings.warn(f"{path}: cached built-in data is unreadable; rebuilding", stacklevel=2)
        write_dataset(path, build())
    return str(path)


def load(spec: str) -> GalaxyDataset:
    """A built-in split ("builtin:heldout") or a dataset file path, read as a GalaxyDataset."""
    if spec.startswith(f"{SCHEME}:"):
        return read_dataset(resolve_source(spec))
    return read_dataset(spec)
