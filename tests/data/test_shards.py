"""The sharded data-set format (galaxy_model.shards over mochapy.sharded): written shard by shard,
read back as one dataset by every reader, identical to the one-file synth, and each kind of
damage (missing shard, rows, shapes or bands that disagree with the manifest, changed bytes, a
torn manifest) named in one line, and refused by the commands before they write anything; job
directories that resume, refuse or restart as they should."""

from __future__ import annotations

import json
import os
import re
from contextlib import nullcontext
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from galaxy_model import shards
from galaxy_model.cli import main
from galaxy_model.dataset import GalaxyDataset, read_dataset, write_dataset
from galaxy_model.survey import synth_survey
from galaxy_model.synth import synthesize
from mochapy import data_sources
from mochapy.errors import DataError
from mochapy.outputs import OutputError
from mochapy.sharded import MANIFEST_NAME, open_sharded, read_manifest

RUN = str(Path(__file__).resolve().parents[2] / "results" / "galaxy_vae_full")


@pytest.fixture(scope="module")
def galaxies() -> GalaxyDataset:
    return synthesize(300, seed=3)


def write_sharded(folder: Path, dataset: GalaxyDataset, shard_size: int) -> Path:
    pieces = [dataset.subset(slice(i, i + 70)) for i in range(0, len(dataset), 70)]
    shards.write_in_shards(str(folder), pieces, shard_size)
    return folder


def assert_same_dataset(a: GalaxyDataset, b: GalaxyDataset) -> None:
    for name in ("data", "ivar", "mask", "scale", "offset"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.provenance == b.provenance


def test_shards_regroup_a_stream_and_read_back_whole(tmp_path: Path, galaxies) -> None:
    folder = write_sharded(tmp_path / "set", galaxies, 110)
    manifest = open_sharded(str(folder))
    assert [s.rows for s in manifest.shards] == [110, 110, 80]
    assert manifest.datasets["data"] == {"shape": [1, 69, 69], "dtype": "float32"}
    assert manifest.attrs["seed"] == 3 and manifest.schema_version == 1
    assert_same_dataset(read_dataset(folder), galaxies)
    assert len(read_dataset(folder, limit=150)) == 150
    assert data_sources.resolve_source(str(folder), "test") == [
        str(folder.resolve() / f"shard-0000{i}.h5") for i in range(3)]


def test_sharded_synth_is_the_one_file_synth_row_for_row(tmp_path: Path, threaded_dask,
                                                         galaxies) -> None:
    synth_survey(lambda: nullcontext(threaded_dask), 300, str(tmp_path / "big"), seed=3, bands=1,
                 shard_size=110, progress=False)  # the second shard spans synth's chunk edge
    sharded = read_dataset(tmp_path / "big")
    assert_same_dataset(sharded, galaxies)
    assert sharded.attrs == galaxies.attrs
    assert sorted(os.listdir(tmp_path / "big")) == [
        MANIFEST_NAME, "shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]


def damage_missing(folder: Path) -> None:
    os.unlink(folder / "shard-00001.h5")


def damage_rows(folder: Path) -> None:
    write_dataset(folder / "shard-00001.h5", read_dataset(folder / "shard-00001.h5", limit=5))


def damage_shape(folder: Path) -> None:
    small = read_dataset(folder / "shard-00002.h5")
    small.data, small.ivar, small.mask = (a[..., :40, :40].copy()
                                          for a in (small.data, small.ivar, small.mask))
    write_dataset(folder / "shard-00002.h5", small)


def damage_bands(folder: Path) -> None:
    colour = read_dataset(folder / "shard-00002.h5")
    colour.data, colour.ivar, colour.mask = (np.repeat(a, 3, axis=1)
                                             for a in (colour.data, colour.ivar, colour.mask))
    colour.offset = np.repeat(colour.offset, 3, axis=1)
    write_dataset(folder / "shard-00002.h5", colour)


def damage_bytes(folder: Path) -> None:
    with h5py.File(folder / "shard-00001.h5", "r+") as handle:
        handle["data"][7] += 1


def damage_manifest(folder: Path) -> None:
    (folder / MANIFEST_NAME).write_text('{"schema_version": 1, "shards": [')


@pytest.mark.parametrize("damage, message", [
    (damage_missing, "shard-00001.h5: shard listed in manifest.json is missing"),
    (damage_rows, "shard-00001.h5: holds 5 rows, manifest.json says 110"),
    (damage_shape, "shard-00002.h5: dataset 'data' is {'shape': [1, 40, 40]"),
    (damage_bands, "shard-00002.h5: dataset 'data' is {'shape': [3, 69, 69]"),
    (damage_bytes, "shard-00001.h5: checksum differs from manifest.json"),
    (damage_manifest, "manifest.json: malformed manifest"),
])
def test_damage_is_named_in_one_line(tmp_path: Path, galaxies, damage, message) -> None:
    folder = write_sharded(tmp_path / "set", galaxies, 110)
    damage(folder)
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        read_dataset(folder)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("damage, message", [
    (damage_missing, "shard-00001.h5: shard listed in manifest.json is missing"),
    (damage_rows, "shard-00001.h5: holds 5 rows, manifest.json says 110"),
    (damage_bands, "shard-00002.h5: dataset 'data' is {'shape': [3, 69, 69]"),
])
def test_commands_refuse_damaged_shards_in_one_line_and_write_nothing(
        tmp_path: Path, galaxies, damage, message) -> None:
    folder = write_sharded(tmp_path / "set", galaxies, 110)
    damage(folder)
    out = tmp_path / "latents"
    result = CliRunner().invoke(main, ["encode", "--run", RUN, "--data", str(folder),
                                       "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and message in result.output, result.output
    assert not out.exists()  # refused before anything is written or a cluster starts


def test_a_directory_without_manifest_is_not_a_data_set(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="no manifest.json"):
        read_manifest(str(tmp_path / "half"))


def test_shard_size_needs_a_directory_name() -> None:
    with pytest.raises(DataError, match="give a directory name"):
        shards.wants_directory("big.h5", 100)
    assert shards.wants_directory("big", None) and not shards.wants_directory("big.h5", None)


def test_jobs_resume_refuse_and_restart(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    job = {"command": "test", "n": 1}
    assert shards.start_job(out, job, [], force=False) == set()
    Path(out, "shard-00000.h5").write_bytes(b"done")
    Path(out, ".partial-shard.h5").write_bytes(b"torn")
    assert shards.start_job(out, job, [], force=False) == {"shard-00000.h5"}
    assert not Path(out, ".partial-shard.h5").exists()
    with pytest.raises(OutputError, match="unfinished job with other inputs"):
        shards.start_job(out, {**job, "n": 2}, [], force=False)
    assert shards.start_job(out, {**job, "n": 2}, [], force=True) == set()
    Path(out, MANIFEST_NAME).write_text(json.dumps({}))
    with pytest.raises(OutputError, match="finished sharded output; pass --force"):
        shards.start_job(out, job, [], force=False)
    with pytest.raises(OutputError, match="one of this command's inputs"):
        shards.start_job(out, job, [str(Path(out, MANIFEST_NAME))], force=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        shards.start_job(str(tmp_path / "other"), job, [], force=False)


def test_sharded_prepare_matches_the_one_file_prepare(tmp_path: Path, threaded_dask) -> None:
    from PIL import Image

    from galaxy_model.prepare import PrepareWarning, prepare
    from galaxy_model.survey import prepare_survey
    from tests.data.test_prepare import grey_picture

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for seed in range(5):
        Image.fromarray(grey_picture(seed=seed)).save(inputs / f"galaxy{seed}.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(PrepareWarning, match="broken.png"):
        expected, _ = prepare([str(inputs)])
    count, skipped = prepare_survey(lambda: nullcontext(threaded_dask), [str(inputs)],
                                    str(tmp_path / "out"), size=69, bands=1, shard_size=2,
                                    progress=False)
    assert count == 5 and len(skipped) == 1 and "broken.png" in skipped[0]
    got = read_dataset(tmp_path / "out")
    for name in ("data", "scale", "offset"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    assert got.provenance == expected.provenance
    assert len(open_sharded(str(tmp_path / "out")).shards) == 3
