"""Built-in splits: built once into the cache, reused, rebuilt when damaged, safe to race."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from galaxy_model import builtin, synth
from galaxy_model.dataset import GalaxyDataset, read_dataset, write_dataset
from mochapy import data_sources
from mochapy.errors import DataError


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GALAXY_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GALAXY_MODEL_BUILTIN_SIZES", "train=6,heldout=4")
    return tmp_path / "cache"


@pytest.fixture
def builds(monkeypatch) -> list[tuple[int, int]]:
    """Record every synthetic build (n, seed)."""
    made: list[tuple[int, int]] = []

    def counting(n: int, seed: int = 0, **kwargs) -> GalaxyDataset:
        made.append((n, seed))
        return synth.synthesize(n, seed=seed, **kwargs)

    monkeypatch.setattr(builtin, "synthesize", counting)
    return made


def test_a_split_is_built_once_then_reused(cache, builds) -> None:
    path = Path(builtin.resolve_source("builtin:train"))
    assert path.parent == cache
    assert path.name == f"train-{synth.GENERATOR_VERSION}-n6-seed1.h5"
    assert synth.GENERATOR_VERSION == "synth-v1+ivar-v2"
    stamp = os.stat(path).st_mtime_ns
    time.sleep(0.01)
    assert builtin.resolve_source("builtin:train") == str(path)
    assert os.stat(path).st_mtime_ns == stamp and builds == [(6, 1)]
    train = builtin.load("builtin:train")
    assert len(train) == 6 and train.provenance[0] == "synth seed=1 index=0"


def test_a_cache_made_with_the_old_ivar_is_not_reused(cache, builds) -> None:
    """Files named before ivar was versioned (population only) hold ivar-v1: a new file is built."""
    cache.mkdir(parents=True)
    write_dataset(cache / "train-synth-v1-n6-seed1.h5", synth.synthesize(6, seed=1))
    train = builtin.load("builtin:train")
    assert builds == [(6, 1)] and train.attrs["ivar_version"] == synth.IVAR_VERSION


def test_heldout_shares_no_image_with_train(cache, builds) -> None:
    train = builtin.load("builtin:train")
    heldout = builtin.load("builtin:heldout")
    assert len(heldout) == 4 and builds == [(6, 1), (4, 2)]
    distance = np.abs(train.data[:, None] - heldout.data[None]).max(axis=(2, 3, 4))
    assert distance.min() > 0.1


def test_a_damaged_cache_file_is_rebuilt_with_a_warning(cache, builds) -> None:
    path = Path(builtin.resolve_source("builtin:heldout"))
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable; rebuilding"):
        assert builtin.resolve_source("builtin:heldout") == str(path)
    assert len(read_dataset(path)) == 4 and len(builds) == 2


def test_concurrent_requests_build_once(cache, monkeypatch) -> None:
    made = []

    def slow(n: int, seed: int = 0, **kwargs) -> GalaxyDataset:
        made.append(n)
        time.sleep(0.3)
        return synth.synthesize(n, seed=seed)

    monkeypatch.setattr(builtin, "synthesize", slow)
    paths = []
    workers = [threading.Thread(target=lambda: paths.append(builtin.resolve_source("heldout")))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert made == [4] and len(set(paths)) == 1 and len(paths) == 3


def test_real_split_comes_from_the_hubble_module(cache, monkeypatch) -> None:
    import galaxy_model.hubble

    fake = synth.synthesize(2, seed=0)
    monkeypatch.setattr(galaxy_model.hubble, "build_real_split", lambda: fake)
    path = builtin.resolve_source("builtin:real")
    assert Path(path).name == f"real-{builtin.REAL_VERSION}.h5"
    assert np.array_equal(builtin.load("builtin:real").data, fake.data)


def test_unknown_splits_and_bad_size_overrides_are_data_errors(cache, monkeypatch) -> None:
    with pytest.raises(DataError, match="valid: builtin:train, builtin:heldout") as info:
        builtin.resolve_source("builtin:validation")
    assert all(f"builtin:{name}" in str(info.value) for name in builtin.SPLITS)
    monkeypatch.setenv("GALAXY_MODEL_BUILTIN_SIZES", "train=lots")
    with pytest.raises(DataError, match="GALAXY_MODEL_BUILTIN_SIZES"):
        builtin.resolve_source("builtin:train")


def test_load_reads_a_plain_file_path(tmp_path) -> None:
    with pytest.raises(DataError, match="no such dataset file"):
        builtin.load(str(tmp_path / "missing.h5"))


def test_cache_dir_defaults_to_the_user_cache(monkeypatch) -> None:
    monkeypatch.delenv("GALAXY_MODEL_CACHE", raising=False)
    assert builtin.cache_dir() == Path.home() / ".cache" / "galaxy_model"


def test_mochapy_sources_resolve_through_the_builtin_scheme(cache, builds, monkeypatch) -> None:
    monkeypatch.setattr(data_sources, "_SCHEMES", dict(data_sources._SCHEMES))
    data_sources.register_source_scheme(builtin.SCHEME, builtin.resolve_source)
    files = data_sources.resolve_source("builtin:heldout", "net.yaml: layer data")
    assert files == [builtin.resolve_source("builtin:heldout")] and builds == [(4, 2)]
