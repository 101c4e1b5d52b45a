"""SGD with momentum and Nesterov's accelerated gradient, as Mocha.jl writes them (the
arithmetic is each backend's solver_update kernel's)."""

from __future__ import annotations

from mochapy.solvers.base import Solver, register_solver


@register_solver("sgd")
class SGD(Solver):
    """v = mu v - lr g;  w += v (mu = 0 is plain SGD). lr multipliers scale each parameter's g."""

    state_names = ("velocity",)


@register_solver("nesterov")
class Nesterov(SGD):
    """v' = mu v - lr g;  w += -mu v + (1 + mu) v'."""
