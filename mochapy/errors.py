"""Errors a user can act on.

Every error raised for bad input derives from MochaError; the command-line front ends print its
message as one line and exit non-zero, without a traceback.
"""

from typing import Any


class MochaError(Exception):
    """Base of every user-facing error: the message alone must tell what is wrong and where."""


class ConfigError(MochaError):
    """A YAML net or solver description is malformed (names the file, layer and field)."""


class TopologyError(MochaError):
    """The layer graph is inconsistent: a missing, duplicate or cyclic blob (names both)."""


class DataError(MochaError):
    """A data file is missing, unreadable, of the wrong shape, or holds non-finite values."""


class DivergenceError(MochaError):
    """Training produced NaN/Inf (names the iteration and the layer where it first appeared)."""


class BackendError(MochaError):
    """The requested compute backend is unavailable (e.g. `gpu` without CuPy or a device)."""


def require_int(value: Any, where: str, minimum: int = 0) -> int:
    """`value` if it is an integer >= minimum (not a bool), else a ConfigError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value
