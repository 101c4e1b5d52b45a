"""docs/survey.md's cutout example runs as written: its Python block makes the FITS image, weight
map and catalogue, then its cutout, evaluate and encode commands run on them in turn."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import h5py
from click.testing import CliRunner

from galaxy_model.cli import main as galaxy_main
from galaxy_model.dataset import read_dataset

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "survey.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def test_the_cutout_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(PAGE.read_text())]
    python = next(code for language, code in blocks if language == "python")
    commands = next(code for language, code in blocks
                    if language == "bash" and "galaxy-model cutout" in code)
    (tmp_path / "results").symlink_to(ROOT / "results")
    monkeypatch.chdir(tmp_path)
    exec(compile(python, str(PAGE), "exec"), {})
    for line in commands.strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "galaxy-model"
        result = CliRunner().invoke(galaxy_main, args[1:])
        assert result.exit_code == 0, f"{line}: {result.output}"
    stamps = read_dataset("stamps.h5")
    assert stamps.data.shape == (2, 1, 69, 69) and stamps.ivar is not None
    with h5py.File("latents.h5") as latents:
        assert len(latents[next(iter(latents))]) == 2
    assert os.path.exists("image.fits")
