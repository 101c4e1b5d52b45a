"""Every net file in examples/ and experiments/ reads and validates (the ones that train long
are run elsewhere at a tiny size or not at all; a broken one must still fail here, before a user
runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mochapy.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted([*(ROOT / "examples").glob("*.yaml"),
                   *(ROOT / "experiments").glob("galaxy_vae_*.yaml")])


@pytest.mark.parametrize("path", EXAMPLES, ids=[f"{p.parent.name}/{p.name}" for p in EXAMPLES])
def test_every_example_net_reads(path: Path) -> None:
    config = load_config(str(path))
    assert config.name and config.layers
