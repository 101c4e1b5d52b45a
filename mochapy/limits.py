"""Limits checked before anything is allocated or read, so a hostile or mistaken input is one
error line instead of an exhausted machine or a hung command.

- Arrays: a size declared in a YAML net or an HDF5/FITS header is compared with the memory
  available now and with the cap MOCHAPY_MAX_ARRAY_BYTES (bytes; default: no cap beyond memory).
- Text inputs (YAML nets, source lists): regular files only (no FIFO or device, which never end),
  at most MOCHAPY_MAX_TEXT_BYTES (default 16 MiB).
- HDF5 files opened for data: external links, external raw storage and virtual datasets read
  other local files, so they are refused unless MOCHAPY_ALLOW_EXTERNAL_HDF5=1.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence

from mochapy.errors import MochaError

DEFAULT_MAX_TEXT_BYTES = 16 * 2**20


class LimitError(MochaError):
    """An input declares more than this machine (or the configured cap) allows."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(float(value))
    except ValueError:
        raise LimitError(f"{name}={value!r} is not a number of bytes") from None
    if number <= 0:
        raise LimitError(f"{name}={value!r} must be a positive number of bytes")
    return number


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable, else total physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def array_byte_limit() -> tuple[int | None, str]:
    """The most bytes one array may take, and where that number comes from."""
    cap = _env_int("MOCHAPY_MAX_ARRAY_BYTES")
    memory = available_memory()
    if cap is not None and (memory is None or cap <= memory):
        return cap, "MOCHAPY_MAX_ARRAY_BYTES"
    return memory, "the memory available"


def _human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PiB"


def check_array(shape: Sequence[int], itemsize: int, what: str, count: int = 1) -> None:
    """LimitError naming `what` when `count` arrays of `shape` would not fit (before allocating:
    Python integers, so no overflow)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise LimitError(f"{what}: negative size in shape {tuple(dims)}")
    needed = math.prod(dims) * itemsize * count
    limit, source = array_byte_limit()
    if limit is not None and needed > limit:
        raise LimitError(f"{what}: shape {tuple(dims)} needs {_human(needed)}, more than "
                         f"{source} ({_human(limit)})")


def text_byte_limit() -> int:
    return _env_int("MOCHAPY_MAX_TEXT_BYTES") or DEFAULT_MAX_TEXT_BYTES


def read_text_bounded(path: str) -> str:
    """A text file's contents, refusing special files (a FIFO or /dev/zero never ends) and
    files over text_byte_limit(). OSError/UnicodeDecodeError as open() and decode() raise."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, " \
            "socket or device)"
        raise LimitError(f"{path}: {kind}; give a file")
    limit = text_byte_limit()
    if info.st_size > limit:
        raise LimitError(f"{path}: {_human(info.st_size)}, more than the {_human(limit)} a text "
                         "input may have (MOCHAPY_MAX_TEXT_BYTES)")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise LimitError(f"{path}: more than the {_human(limit)} a text input may have "
                         "(MOCHAPY_MAX_TEXT_BYTES)")
    return data.decode("utf-8")


def external_hdf5_allowed() -> bool:
    return os.environ.get("MOCHAPY_ALLOW_EXTERNAL_HDF5", "") not in ("", "0")


def _label(where: str, path: str, name: str) -> str:
    """`WHERE: FILE:NAME`, without WHERE when it only repeats the file."""
    name = name.lstrip("/")
    return f"{path}:{name}" if where in ("", path) else f"{where}: {path}:{name}"


def check_hdf5_links(handle, where: str) -> None:
    """Refuse a file with an external link anywhere in it (unless allowed), before any name in
    it is looked up (looking one up would open the other file). `handle`: an open h5py.File."""
    if external_hdf5_allowed():
        return
    found: list[tuple[str, object]] = []

    def visit(name: str, link: object) -> object:
        if type(link).__name__ == "ExternalLink":
            found.append((name, link))
            return True  # stop at the first
        return None

    handle.visititems_links(visit)
    if found:
        name, link = found[0]
        raise LimitError(f"{_label(where, handle.filename, name)} is an external link to "
                         f"{link.filename}:{link.path}; set MOCHAPY_ALLOW_EXTERNAL_HDF5=1 to "
                         "follow it")


def check_hdf5_node(handle, name: str, where: str, rows: int = 0):
    """`handle[name]`, refused if reaching it follows an external link, or its data lives in
    other files (external raw storage, a virtual dataset), unless allowed; and, for a dataset,
    if it (its first `rows` rows, if given) would not fit in memory. `handle`: an h5py.File."""
    path = getattr(handle, "filename", "?")
    label = _label(where, path, name)
    if not external_hdf5_allowed():
        parts = [p for p in name.split("/") if p]
        group = handle
        for index, part in enumerate(parts):
            link = group.get(part, getlink=True)
            if link is not None and type(link).__name__ == "ExternalLink":
                raise LimitError(f"{_label(where, path, '/'.join(parts[:index + 1]))} is an "
                                 f"external link to {link.filename}:{link.path}; set "
                                 "MOCHAPY_ALLOW_EXTERNAL_HDF5=1 to follow it")
            if index < len(parts) - 1:
                group = group[part]
    node = handle[name]
    if not hasattr(node, "shape"):  # a group
        return node
    if not external_hdf5_allowed():
        if node.external:
            raise LimitError(f"{label} keeps its data in other files "
                             f"({node.external[0][0]}...); set MOCHAPY_ALLOW_EXTERNAL_HDF5=1 "
                             "to read them")
        if node.is_virtual:
            raise LimitError(f"{label} is a virtual dataset reading other files; "
                             "set MOCHAPY_ALLOW_EXTERNAL_HDF5=1 to read it")
    shape = tuple(node.shape or ())
    if rows and shape:
        shape = (min(rows, shape[0]), *shape[1:])
    check_array(shape, node.dtype.itemsize, label)
    return node
