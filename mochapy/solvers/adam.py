"""Adam (Kingma & Ba), as Mocha.jl: bias-corrected step lr_t = lr sqrt(1-b2^t)/(1-b1^t)."""

from __future__ import annotations

import math

import numpy as np

from mochapy.solvers.base import Solver, register_solver


@register_solver("adam")
class Adam(Solver):
    """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  w -= lr_t m / (sqrt(v) + eps)."""

    state_names = ("m", "v")

    def bias_correction(self) -> float:
        cfg, t = self.config, self.iteration
        return math.sqrt(1 - cfg.beta2**t) / (1 - cfg.beta1**t)

    def step(self, lr: float) -> None:
        cfg = self.config
        lr_t = lr * self.bias_correction()
        g, m, v = self.net.params.grad, self.state["m"], self.state["v"]
        work = self.work
        m *= cfg.beta1
        np.multiply(g, 1 - cfg.beta1, out=work)
        m += work
        np.multiply(g, g, out=work)
        work *= 1 - cfg.beta2
        v *= cfg.beta2
        v += work
        np.sqrt(v, out=work)
        work += cfg.epsilon
        np.divide(m, work, out=work)
        self.apply_step(work, lr_t)
