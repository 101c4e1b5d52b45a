"""Pluggable solvers (SGD, Nesterov, Adam) and their lr / momentum policies."""

from mochapy.solvers import adam, sgd  # noqa: F401  (imported for registration)
from mochapy.solvers.base import SOLVERS, Solver, SolverConfig, make_solver
from mochapy.solvers.policies import LRPolicy, MomPolicy

__all__ = ["SOLVERS", "LRPolicy", "MomPolicy", "Solver", "SolverConfig", "make_solver"]
