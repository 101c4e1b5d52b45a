"""`galaxy-model montage`: a PNG with one labelled block per dataset."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image

from galaxy_model.cli.montage import command as montage_command
from galaxy_model.dataset import GalaxyDataset, write_dataset
from galaxy_model.montage import display_stretch, montage, mosaic


def dataset(count, bands=1, seed=0, label=None):
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 0.02, (count, bands, 69, 69)).astype(np.float32)
    data[:, :, 30:39, 30:39] += 1.0
    return GalaxyDataset(
        data=data,
        scale=np.ones(count),
        offset=np.zeros((count, bands)),
        provenance=[f"row {i}" for i in range(count)],
        attrs={"label": label} if label else {},
    )


def test_stretch_and_mosaic_layout():
    stamp = np.zeros((1, 69, 69), np.float32)
    stamp[0, 0, 0], stamp[0, 0, 1], stamp[0, 0, 2] = 1.0, 0.05, -1.0
    shown = display_stretch(stamp)
    assert shown.shape == (69, 69, 3)
    assert shown[0, 0, 0] == 1.0 and shown[0, 2, 0] == 0.0
    assert 0.2 < shown[0, 1, 0] < 0.5  # asinh lifts faint light well above linear (0.05)
    tiled = mosaic(np.zeros((5, 3, 69, 69), np.float32))
    assert tiled.shape == (2 * 69 + 2, 3 * 69 + 4, 3)


def test_montage_writes_a_png(tmp_path):
    out = tmp_path / "montage.png"
    montage([("real", dataset(5)), ("synthetic", dataset(40, bands=3))], 9, str(out), seed=1)
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > picture.height > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["montage.png"]


def test_cli_montage_of_dataset_files(tmp_path):
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    write_dataset(first, dataset(20, label="real (test)"))
    write_dataset(second, dataset(20, seed=1))
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        montage_command, [str(first), str(second), "--out", str(out), "--n", "4"]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"wrote {out}" in result.output
    missing = CliRunner().invoke(montage_command, [str(tmp_path / "nope.h5"), "--out",
                                                   str(tmp_path / "other.png")])
    assert missing.exit_code == 2 and "error:" in missing.output and "nope.h5" in missing.output
