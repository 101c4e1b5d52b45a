"""The one output policy of every command: nothing that exists is lost without an explicit flag.

- `claim_output(path, inputs, force)`: call before the work starts. An output file that exists
  is refused unless `force`; an output that is one of the command's own `inputs` is refused even
  with `force` (compared by real path, so through symlinks and hard links too).
- `claim_output_dir(path, inputs, force)`: the same for a folder of outputs (figures): it must
  be new or empty, unless `force`, which replaces only the files of the same names.
- `files_under(folder)`: the files of an input folder (a run directory), to pass as inputs.
- `atomic_directory(path, inputs, force)`: a context manager giving a staging folder; the files
  written there appear in `path` together when the block ends without error, or not at all.

Writers still write each file atomically (mochapy.atomic); this module decides whether they may.
Runs follow the same rule with `--resume` in place of `--force` (mochapy.training).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

from mochapy.atomic import PARTIAL_PREFIX
from mochapy.errors import MochaError


class OutputError(MochaError):
    """An output would replace an existing file or one of the command's own inputs."""


def same_file(a: str, b: str) -> bool:
    """True when `a` and `b` name one file: the same real path, or the same inode (hard link)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.realpath(a) == os.path.realpath(b)


def _input_hit(path: str, inputs: Iterable[str | None]) -> str | None:
    """The first input that `path` would write over (inputs that are not paths are ignored)."""
    for candidate in inputs:
        if candidate and os.path.lexists(candidate) and same_file(path, candidate):
            return candidate
    return None


def files_under(folder: str) -> list[str]:
    """Every file under `folder` (none if it is not a folder): a run directory given as an input
    protects each file it holds."""
    if not os.path.isdir(folder):
        return []
    return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]


def _alias(path: str, hit: str) -> str:
    """' (the same file as HIT)' when the input was named differently, else nothing."""
    return "" if os.path.normpath(path) == os.path.normpath(hit) else f" (the same file as {hit})"


def claim_output(path: str, inputs: Iterable[str | None] = (), force: bool = False) -> None:
    """Refuse, as one OutputError line, to write file `path` over an input or an existing file."""
    hit = _input_hit(path, inputs)
    if hit is not None:
        raise OutputError(f"{path} is one of this command's inputs{_alias(path, hit)}; "
                          "choose another output path")
    if os.path.isdir(path):
        raise OutputError(f"{path} is a folder; give a file name for the output")
    if os.path.lexists(path) and not force:
        raise OutputError(f"{path} exists; pass --force to replace it")


def claim_output_dir(path: str, inputs: Iterable[str | None] = (), force: bool = False) -> None:
    """Refuse a folder of outputs that exists and is not empty (unless `force`), is a file, or
    is one of the inputs."""
    inputs = list(inputs)
    hit = _input_hit(path, inputs)
    if hit is not None:
        raise OutputError(f"{path} is one of this command's inputs{_alias(path, hit)}; "
                          "choose another output folder")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{path} exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path) and not force:
        raise OutputError(f"{path} exists and is not empty; pass --force to replace the files "
                          "of the same names in it")


@contextlib.contextmanager
def atomic_directory(path: str, inputs: Iterable[str | None] = (),
                     force: bool = False) -> Iterator[str]:
    """Yield a staging folder beside `path`; on success its files move into `path` together.

    A new `path` appears by one rename, whole. Into an existing folder (empty, or any with
    `force`) each file moves by its own rename, after all of them were written, and none moves
    if one would replace an input. On error the staging folder is removed and `path` is as before.
    """
    inputs = list(inputs)
    claim_output_dir(path, inputs, force)
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{os.path.basename(path)}-",
                                   dir=parent)
    except OSError as exc:  # say so about `path`, not the staging folder
        raise OSError(exc.errno, exc.strerror, path) from None
    try:
        yield staging
        try:
            _publish(staging, path, inputs, force)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: str, path: str, inputs: list[str | None], force: bool) -> None:
    names = sorted(os.listdir(staging))
    if not os.path.exists(path):
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; a new folder gets the usual
        os.rename(staging, path)
        return
    claim_output_dir(path, inputs, force)  # it may have filled up while the work ran
    targets = [os.path.join(path, name) for name in names]
    for target in targets:
        hit = _input_hit(target, inputs)
        if hit is not None:
            raise OutputError(f"{target} is one of this command's inputs"
                              f"{_alias(target, hit)}; choose another output folder")
    for name, target in zip(names, targets, strict=True):
        os.replace(os.path.join(staging, name), target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
