"""Adam (Kingma & Ba), as Mocha.jl: bias-corrected step lr_t = lr sqrt(1-b2^t)/(1-b1^t)."""

from __future__ import annotations

from mochapy.solvers.base import Solver, register_solver


@register_solver("adam")
class Adam(Solver):
    """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  w -= lr_t m / (sqrt(v) + eps)
    (the arithmetic is each backend's solver_update kernel's)."""

    state_names = ("m", "v")
