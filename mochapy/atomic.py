"""Files that appear whole or not at all: temporary file, flush, fsync, rename."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable

import h5py
import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
PARTIAL_PREFIX = ".partial-"


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Call `write(temporary_path)`, then fsync and rename it to `path` (never half-written)."""
    folder = os.path.dirname(os.path.abspath(path))
    temp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=os.path.splitext(path)[1],
                                    dir=folder)
        os.close(fd)
        os.chmod(temp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        write(temp)
        with open(temp, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(temp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
        if isinstance(exc, OSError):  # disk full, read-only...: say so about `path`, not `temp`
            raise _about(path, exc) from exc
        raise


def _about(path: str, exc: OSError) -> OSError:
    """The same failure as an OSError about `path`, its reason on one line: the system's words
    for its errno (HDF5 wraps them in a long multi-line message, sometimes without setting it)."""
    number = exc.errno
    if number is None:
        found = re.search(r"errno = (\d+)", str(exc))
        number = int(found.group(1)) if found else None
    reason = os.strerror(number) if number is not None else " ".join(str(exc).split())
    return OSError(number, reason, path)


def remove_partial_files(folder: str) -> list[str]:
    """Delete the temporary files that writers killed mid-write (kill -9, power loss) left in
    `folder`; returns their paths. Only call it while holding the folder's lock."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(PARTIAL_PREFIX) and os.path.isfile(path):
            os.unlink(path)
            removed.append(path)
    return removed


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


def read_hdf5_arrays(handle: h5py.File) -> dict[str, np.ndarray]:
    """Every dataset of an open HDF5 file, by its path: the inverse of write_hdf5_atomically."""
    arrays: dict[str, np.ndarray] = {}
    handle.visititems(
        lambda name, node: arrays.__setitem__(name, node[()])
        if isinstance(node, h5py.Dataset) else None
    )
    return arrays
