"""The kernel interface: what layers and solvers may call on `backend.kernels`.

Every backend's kernel library implements `Kernels` with the same contracts: the NumPy library
(`numpy_kernels.NumPyKernels`, the CPU backend without a C compiler), the compiled CPU loops
(`cpu_kernels.CPUKernels`) and the CUDA library (`gpu_kernels.KernelLibrary`). Arrays are the
backend's own (NumPy or CuPy), C-contiguous, of the backend's dtype; the tests run each op on
every library and compare. `DeviceKernels` adds the ops only the layers' `_gpu` paths call: on
the CPU, NumPy's own array operations are those layers' kernels.

Numbers go down, never objects: a Solver computes its learning rate, momentum and step count
(`SolverStep`) and hands them to `solver_update` with the arrays, so the learning rate's path from
the YAML to the kernel runs one way (SolverConfig -> policy -> Solver.learning_rate -> kernels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class SolverStep:
    """The numbers of one solver update: the learning rate before Adam's bias correction, the
    momentum (SGD, Nesterov), Adam's betas and epsilon, and t, the number of this update (1 for
    the first), from which Adam's bias correction is computed."""

    lr: float
    momentum: float
    beta1: float
    beta2: float
    epsilon: float
    t: int


def adam_step_lr(step: SolverStep) -> float:
    """Adam's bias-corrected learning rate lr sqrt(1 - beta2^t) / (1 - beta1^t), as Mocha.jl."""
    return step.lr * math.sqrt(1 - step.beta2**step.t) / (1 - step.beta1**step.t)


def smallest_normal(dtype: Any) -> float:
    """Below this magnitude a solver update stores zero (x86's flush-to-zero, on every backend)."""
    return float(np.finfo(dtype).tiny)


@runtime_checkable
class Kernels(Protocol):
    """The ops every backend's kernel library provides, with one contract each."""

    def bias_neuron_forward(self, neuron: Any, pre: Any, bias: Any, y: Any) -> None:
        """pre += bias (bias per column of the (N, out) matrix pre); y = neuron(pre), which for
        an Exponential is exp(min(pre, cap)) + shift (neuron.parameter the cap, neuron.offset the
        shift). y may be pre (an Identity neuron on the CPU works in place)."""

    def neuron_backward_column_sum(self, neuron: Any, pre: Any, y: Any, dy: Any, dpre: Any,
                                   bias_grad: Any) -> None:
        """dpre = neuron'(pre) dy; bias_grad = the column sums of dpre. dpre may be dy. An
        Exponential's slope is exp(pre) below the cap (recomputed, not y - shift), 0 above."""

    def gaussian_recon_loss(self, mu: Any, sigma: Any, x: Any, scale: float, beta: float,
                            mean_inv_var: float, loss: Any, dmu: Any | None, dsigma: Any | None,
                            ivar: Any | None = None, mask: Any | None = None,
                            noise_variance: bool = False) -> None:
        """GaussianReconLoss (mochapy/layers/gaussian_recon_loss.py has the formulas), with its
        gradients in the same pass. loss[0] = 0.5 scale sum over used pixels of
        [log 2pi + log v + (x - mu)^2 / v], v = sigma^2 (+ 1/ivar with noise_variance); a pixel
        is used where mask (if given) is 0 and ivar (if given) > 0. dmu and dsigma, each where
        not None: scale (mu - x) / v and scale sigma (1 - (x - mu)^2 / v) / v, both times v^beta
        (beta-NLL); mean_inv_var > 0 gives dmu = scale (mu - x) mean_inv_var; zero at unused
        pixels."""

    def solver_update(self, method: str, params: Any, grads: Any, states: list[Any],
                      bounds: Any, coefficients: Any, step: SolverStep) -> None:
        """One regularised solver update of a flat parameter buffer, in place.

        method: "sgd", "nesterov" or "adam" (plan.SOLVER_METHODS); states: [velocity] or
        [m, v]; bounds and coefficients: plan.segment_table's arrays on the backend's device
        (segment s covers bounds[s] <= i < bounds[s + 1], coefficients[s] = lr_mult, l2, l1).
        grad = grads + l2 w + l1 sign(w) (grads themselves are not changed), then
            sgd:       v = momentum v - lr lr_mult grad;  w += v
            nesterov:  w -= momentum v;  v = momentum v - lr lr_mult grad;  w += (1 + momentum) v
            adam:      m = b1 m + (1 - b1) grad;  v = b2 v + (1 - b2) grad^2;
                       w -= adam_step_lr(step) lr_mult m / (sqrt(v) + eps)
        Parameters and states whose magnitude falls below smallest_normal are stored as zero:
        weights without a data gradient decay under L2 into subnormal numbers, on which x86
        arithmetic (the next matrix products) runs a hundred times slower."""


@runtime_checkable
class DeviceKernels(Kernels, Protocol):
    """The GPU library's further ops, called by the layers' `_gpu` paths only."""

    def neuron_forward(self, code: int, parameter: float, offset: float, x: Any,
                       y: Any) -> None: ...

    def neuron_backward(self, code: int, parameter: float, x: Any, y: Any, dy: Any,
                        dx: Any) -> None: ...

    def elementwise_forward(self, operation: str, a: Any, b: Any, y: Any) -> None: ...

    def elementwise_backward(self, operation: str, a: Any, b: Any, y: Any, dy: Any,
                             da: Any | None, db: Any | None) -> None: ...

    def power_forward(self, x: Any, scale: float, shift: float, power: float, base: Any,
                      y: Any) -> None: ...

    def power_backward(self, base: Any, scale: float, power: float, dy: Any, dx: Any) -> None: ...

    def gaussian_kl_loss(self, mu: Any, sigma: Any, scale: float, loss: Any, dmu: Any | None,
                         dsigma: Any | None) -> None: ...

    def square_loss(self, pred: Any, label: Any, scale: float, loss: Any, dpred: Any | None,
                    dlabel: Any | None) -> None: ...

    def random_state(self, seed: int, counter: int = 0) -> Any: ...

    def read_counter(self, state: Any) -> int: ...

    def write_counter(self, state: Any, counter: int) -> None: ...

    def philox_normal(self, out: Any, state: Any) -> None: ...

    def noise_level(self, images: Any, clip: float, calibration: float, floor: float, lag: int,
                    out: Any) -> None: ...
