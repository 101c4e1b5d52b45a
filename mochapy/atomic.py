"""Files that appear whole or not at all: temporary file, flush, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import h5py
import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Call `write(temporary_path)`, then fsync and rename it to `path` (never half-written)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".partial-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    os.chmod(temp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(temp)
        with open(temp, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(temp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def write_text_atomically(path: str, text: str) -> None:
    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)

    write_atomically(path, write)


def write_hdf5_atomically(path: str, items: dict[str, np.ndarray], attrs: dict) -> None:
    """Write arrays (keys are HDF5 paths) and file attributes to `path` atomically."""

    def write(temp: str) -> None:
        with h5py.File(temp, "w") as handle:
            for key, value in items.items():
                handle.create_dataset(key, data=value)
            handle.attrs.update(attrs)

    write_atomically(path, write)
