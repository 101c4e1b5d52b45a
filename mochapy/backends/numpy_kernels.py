"""The kernel interface in NumPy: the CPU backend's ops where the compiled loops do not build.

These are the reference the compiled CPU loops and the CUDA kernels are tested against: each op
is a few whole-array NumPy operations into preallocated scratch arrays (kept per shape), with
the same contract as `interface.Kernels`.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from mochapy.backends.interface import SolverStep, adam_step_lr, smallest_normal

LOG_2PI = math.log(2 * math.pi)


class Scratch:
    """Named scratch arrays, made on first use for each shape and dtype and reused after, so a
    training step allocates nothing. Each thread has its own (one library serves every net of
    the process, and nets may run in threads, e.g. Dask's)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        arrays = self._local.__dict__.setdefault("arrays", {})
        key = (name, tuple(shape), np.dtype(dtype))
        if key not in arrays:
            arrays[key] = np.empty(shape, dtype=dtype)
        return arrays[key]

    def like(self, name: str, array: np.ndarray) -> np.ndarray:
        return self(name, array.shape, array.dtype)


class NumPyKernels:
    """`interface.Kernels` with NumPy, one thread (BLAS aside)."""

    def __init__(self) -> None:
        self.scratch = Scratch()

    def __repr__(self) -> str:
        return "NumPyKernels()"

    # -- InnerProduct's bias and neuron ------------------------------------------------------------
    def bias_neuron_forward(self, neuron: Any, pre: np.ndarray, bias: np.ndarray,
                            y: np.ndarray) -> None:
        pre += bias
        neuron._forward_cpu(pre, y)

    def neuron_backward_column_sum(self, neuron: Any, pre: np.ndarray, y: np.ndarray,
                                   dy: np.ndarray, dpre: np.ndarray,
                                   bias_grad: np.ndarray) -> None:
        neuron._backward_cpu(pre, y, dy, dpre)
        np.sum(dpre, axis=0, out=bias_grad)

    # -- GaussianReconLoss -------------------------------------------------------------------------
    def gaussian_recon_loss(
        self, mu: np.ndarray, sigma: np.ndarray, x: np.ndarray, scale: float, beta: float,
        mean_inv_var: float, loss: np.ndarray, dmu: np.ndarray | None,
        dsigma: np.ndarray | None, ivar: np.ndarray | None = None, mask: np.ndarray | None = None,
        noise_variance: bool = False,
    ) -> None:
        r, inv_var = self.scratch.like("residual", mu), self.scratch.like("inv_var", mu)
        np.subtract(x, mu, out=r)
        np.multiply(sigma, sigma, out=inv_var)
        used = None
        if ivar is not None or mask is not None:
            used = self.scratch.like("used", mu)
            used.fill(1.0)
            if mask is not None:
                used *= mask == 0
            if ivar is not None:
                used *= ivar > 0
            if noise_variance:
                inv_var += np.divide(1.0, ivar, out=np.zeros_like(ivar), where=ivar > 0)
            log_variance = float(np.log(inv_var, where=used > 0, out=np.zeros_like(inv_var)).sum())
            np.divide(used, inv_var, out=inv_var)  # 1/v at used pixels, 0 elsewhere
            count = float(used.sum())
        else:
            log_variance = 2.0 * float(np.log(sigma).sum())
            np.reciprocal(inv_var, out=inv_var)
            count = float(r.size)
        weighted_sq = float(np.einsum("ij,ij,ij->", r, r, inv_var, optimize=False))
        loss[0] = 0.5 * scale * (count * LOG_2PI + log_variance + weighted_sq)
        weight = self._beta_weight(inv_var, used, beta) if beta else None
        if dmu is not None:
            if mean_inv_var:
                np.multiply(r, -scale * mean_inv_var, out=dmu)
                if used is not None:
                    dmu *= used
            else:
                np.multiply(r, inv_var, out=dmu)
                dmu *= -scale
            if weight is not None:
                dmu *= weight
        if dsigma is not None:
            np.multiply(r, r, out=dsigma)
            dsigma *= inv_var
            np.subtract(1.0, dsigma, out=dsigma)
            if noise_variance:  # d/dsigma of log v + r^2/v is 2 sigma (1 - r^2/v)/v
                dsigma *= sigma
                dsigma *= inv_var
            else:
                dsigma /= sigma
                if used is not None:
                    dsigma *= used
            dsigma *= scale
            if weight is not None:
                dsigma *= weight

    def _beta_weight(self, inv_var: np.ndarray, used: np.ndarray | None,
                     beta: float) -> np.ndarray:
        """v^beta = inv_var^(-beta), the beta-NLL weight of each pixel's gradients (1 at unused
        pixels, whose gradients are zero anyway)."""
        if used is not None:
            inv_var = np.where(used > 0, inv_var, 1.0)
        return np.power(inv_var, -beta, out=self.scratch.like("pixel_weight", inv_var))

    # -- solvers ---------------------------------------------------------------------------------
    def solver_update(self, method: str, params: np.ndarray, grads: np.ndarray,
                      states: list[np.ndarray], bounds: np.ndarray, coefficients: np.ndarray,
                      step: SolverStep) -> None:
        grad = self.scratch.like("grad", params)
        step_lr = adam_step_lr(step) if method == "adam" else step.lr
        tiny = smallest_normal(params.dtype)
        for first, stop, (lr_mult, l2, l1) in zip(bounds[:-1], bounds[1:], coefficients,
                                                  strict=True):
            if lr_mult == 0:  # frozen: left bit for bit, subnormals included
                continue
            w, g = params[first:stop], grad[first:stop]
            np.copyto(g, grads[first:stop])
            if l2:
                g += w * params.dtype.type(l2)
            if l1:
                g += np.sign(w) * params.dtype.type(l1)
            lr = float(step_lr * lr_mult)
            if method == "adam":
                self._adam(w, g, *(state[first:stop] for state in states), lr, step)
            else:
                self._momentum(method, w, g, states[0][first:stop], lr, step.momentum)
            for array in (w, *(state[first:stop] for state in states)):
                array[np.abs(array) < tiny] = 0

    @staticmethod
    def _adam(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float,
              step: SolverStep) -> None:
        m *= step.beta1
        m += (1 - step.beta1) * g
        v *= step.beta2
        g *= g
        g *= 1 - step.beta2
        v += g
        np.sqrt(v, out=g)
        g += step.epsilon
        np.divide(m, g, out=g)
        g *= lr
        w -= g

    @staticmethod
    def _momentum(method: str, w: np.ndarray, g: np.ndarray, velocity: np.ndarray, lr: float,
                  momentum: float) -> None:
        """SGD: v = mu v - lr g; w += v. Nesterov: w -= mu v; v = mu v - lr g;
        w += (1 + mu) v."""
        if method == "nesterov":
            w -= momentum * velocity
        velocity *= momentum
        g *= lr
        velocity -= g
        w += (1 + momentum) * velocity if method == "nesterov" else velocity
