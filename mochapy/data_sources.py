"""Where HDF5Data finds its files: a .h5 path, a Mocha source list, or a registered scheme.

Mocha's convention: `source` names a text file listing one HDF5 path per line. We also accept a
single .h5 path, and `scheme:rest` for schemes that packages register through the
`mochapy.data_sources` entry-point group (galaxy_model registers `builtin:`), so mochapy never
imports the applications built on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points

from mochapy.errors import DataError
from mochapy.limits import read_text_bounded
from mochapy.sharded import open_sharded

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_SCHEMES: dict[str, Callable[[str], str]] = {}


def register_source_scheme(scheme: str, resolver: Callable[[str], str]) -> None:
    """Make `scheme:...` sources resolvable by `resolver(spec) -> path of an HDF5 file`."""
    _SCHEMES[scheme] = resolver


def _scheme_resolver(scheme: str) -> Callable[[str], str] | None:
    if scheme not in _SCHEMES:
        for entry in entry_points(group="mochapy.data_sources"):
            if entry.name == scheme:
                try:
                    _SCHEMES[scheme] = entry.load()
                except Exception as exc:
                    raise DataError(
                        f"data source scheme {scheme!r} comes from {entry.value}, which does not "
                        f"load: {type(exc).__name__}: {exc}"
                    ) from None
    return _SCHEMES.get(scheme)


def source_scheme(source: str) -> str | None:
    """`builtin` for "builtin:train"; None for a path (a one-letter prefix is a Windows drive)."""
    scheme, sep, _ = source.partition(":")
    return scheme if sep and len(scheme) > 1 and "/" not in scheme else None


def resolve_source(source: str, where: str, base_dir: str = ".",
                   chain: tuple[str, ...] = ()) -> list[str]:
    """Return the HDF5 files a source names; relative paths are taken from `base_dir`. `chain`:
    the source lists that led here (a list that names itself is refused, not followed forever)."""
    scheme = source_scheme(source)
    if scheme:
        resolver = _scheme_resolver(scheme)
        if resolver is None:
            raise DataError(f"{where}: unknown data source scheme {scheme!r} in {source!r}")
        return [resolver(source)]
    path = source if os.path.isabs(source) else os.path.join(base_dir, source)
    if not os.path.exists(path):
        raise DataError(f"{where}: data source {source!r} not found ({path})")
    if path.lower().endswith(HDF5_SUFFIXES):
        return [path]
    if os.path.isdir(path):  # a sharded data set: its shards, in row order
        manifest = open_sharded(path)
        return [manifest.path(shard) for shard in manifest.shards]
    real = os.path.realpath(path)
    if real in chain:
        raise DataError(f"{where}: source list {path} names itself (through {len(chain)} list(s))")
    try:
        lines = [line.strip() for line in read_text_bounded(path).splitlines()]
    except UnicodeDecodeError:
        raise DataError(
            f"{where}: {path} is neither an HDF5 file (.h5) nor a text list of HDF5 paths"
        ) from None
    listed_dir = os.path.dirname(os.path.abspath(path))
    files = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        files.extend(resolve_source(line, f"{where} (listed in {path})", listed_dir,
                                    (*chain, real)))
    if not files:
        raise DataError(f"{where}: source list {path} names no HDF5 files")
    return files
