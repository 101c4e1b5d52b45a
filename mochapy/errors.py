"""Errors a user can act on.

Every error raised for bad input derives from MochaError; the command-line front ends print its
message as one line and exit non-zero, without a traceback.
"""


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
