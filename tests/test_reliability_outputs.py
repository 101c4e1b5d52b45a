"""The output policy (mochapy.outputs) on its own: what every command relies on before it
writes. The commands that use it are tried through their command lines in reliability_table.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mochapy.outputs import OutputError, atomic_directory, claim_output, claim_output_dir


def test_an_existing_output_needs_force_and_an_input_is_refused_even_with_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data.h5"
    data.write_bytes(b"images")
    link = tmp_path / "link.h5"
    link.symlink_to(data)
    hard = tmp_path / "hard.h5"
    os.link(data, hard)
    claim_output(str(tmp_path / "new.h5"), [str(data)])
    with pytest.raises(OutputError, match="exists; pass --force"):
        claim_output(str(data))
    claim_output(str(data), force=True)
    for alias in (data, link, hard, tmp_path / "sub" / ".." / "data.h5"):
        with pytest.raises(OutputError, match="is one of this command's inputs"):
            claim_output(str(alias), [str(data)], force=True)
    with pytest.raises(OutputError, match="is a folder"):
        claim_output(str(tmp_path), force=True)


def test_an_output_folder_must_be_new_or_empty_unless_forced(tmp_path: Path) -> None:
    claim_output_dir(str(tmp_path / "new"))
    claim_output_dir(str(tmp_path))  # empty
    (tmp_path / "old.png").write_bytes(b"old")
    with pytest.raises(OutputError, match="not empty; pass --force"):
        claim_output_dir(str(tmp_path))
    claim_output_dir(str(tmp_path), force=True)


def test_an_atomic_directory_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "figs"
    with pytest.raises(RuntimeError), atomic_directory(str(out)) as staging:
        Path(staging, "a.png").write_bytes(b"a")
        raise RuntimeError("the second figure failed")
    assert os.listdir(tmp_path) == []
    with atomic_directory(str(out)) as staging:
        Path(staging, "a.png").write_bytes(b"a")
        Path(staging, "b.png").write_bytes(b"b")
    assert sorted(os.listdir(out)) == ["a.png", "b.png"] and os.listdir(tmp_path) == ["figs"]
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError), atomic_directory(str(out), force=True) as staging:
        Path(staging, "a.png").write_bytes(b"new a")
        raise RuntimeError("failed")
    assert (out / "a.png").read_bytes() == b"a"
    with atomic_directory(str(out), force=True) as staging:
        Path(staging, "a.png").write_bytes(b"new a")
    assert (out / "a.png").read_bytes() == b"new a" and (out / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputError, match="inputs"), atomic_directory(
        str(out), [str(out / "keep.txt")], force=True
    ) as staging:
        Path(staging, "keep.txt").write_text("replaced")
    assert (out / "keep.txt").read_text() == "mine" and os.listdir(tmp_path) == ["figs"]
