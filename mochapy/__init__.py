"""mochapy: Mocha.jl's layer engine in Python.

Immutable layer configs with runtime state, named blobs sorted into a graph, trait flags driving the
engine, NumPy and CuPy backends chosen per run, pluggable solvers, lr policies and coffee breaks,
HDF5 snapshots, and nets declared in YAML.
"""

from mochapy.backends import CPUBackend, get_backend
from mochapy.config import load_config
from mochapy.net import Net

__all__ = ["CPUBackend", "Net", "get_backend", "load_config"]
__version__ = "0.1.0"
