"""SGD with momentum and Nesterov's accelerated gradient, as Mocha.jl writes them."""

from __future__ import annotations

from mochapy.solvers.base import Solver, register_solver


@register_solver("sgd")
class SGD(Solver):
    """v = mu v - lr g;  w += v (mu = 0 is plain SGD). lr multipliers scale each parameter's g."""

    state_names = ("velocity",)

    def step(self, lr: float) -> None:
        v = self.state["velocity"]
        v *= self.momentum()
        self.apply_step_into(v, lr)
        self.net.params.data += v

    def apply_step_into(self, velocity, lr: float) -> None:
        """velocity -= lr * lr_mult * grad."""
        grad = self.net.params.grad
        if self.uniform_lr:
            velocity -= lr * grad
            return
        for start, stop, param in self.segments:
            velocity[start:stop] -= (lr * param.spec.lr_mult) * grad[start:stop]


@register_solver("nesterov")
class Nesterov(SGD):
    """v' = mu v - lr g;  w += -mu v + (1 + mu) v'."""

    def step(self, lr: float) -> None:
        mu = self.momentum()
        v = self.state["velocity"]
        w = self.net.params.data
        w -= mu * v
        v *= mu
        self.apply_step_into(v, lr)
        w += (1 + mu) * v
