"""The kernel interface (mochapy/backends/interface.py): every library (NumPy, the compiled CPU
loops, CUDA on the device or its emulation) against one float64 reference of each op's contract,
and the solver handing numbers down (tests/engine/test_import_graph.py: no layer imports a
backend module)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mochapy.backends import CPUBackend, cpu_kernels
from mochapy.backends.interface import DeviceKernels, Kernels, SolverStep, smallest_normal
from mochapy.neurons import Exponential, Identity, ReLU
from mochapy.solvers import SolverConfig, make_solver
from tests.helpers import build_net

LIBRARIES = ["numpy", "compiled", pytest.param("gpu", marks=pytest.mark.gpu)]
STEP = SolverStep(lr=0.01, momentum=0.8, beta1=0.9, beta2=0.99, epsilon=1e-6, t=3)
# Three segments: lr_mult, L2 and L1 weights differ in each.
BOUNDS = np.array([0, 20, 35, 50])
COEFFICIENTS = np.array([[1.0, 0.1, 0.0], [2.0, 0.0, 0.05], [0.5, 0.2, 0.3]])


@pytest.fixture(params=LIBRARIES)
def make_backend(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    """A backend of the given dtype whose `kernels` is the library under test."""
    if request.param == "gpu":
        request.getfixturevalue("gpu_runtime")
        from mochapy.backends.gpu import GPUBackend

        return GPUBackend
    if request.param == "compiled" and isinstance(cpu_kernels.load(), str):
        pytest.skip(f"the compiled CPU loops are not available: {cpu_kernels.load()}")
    return lambda dtype: CPUBackend(dtype, compiled=request.param == "compiled")


def test_every_library_provides_the_interface(make_backend) -> None:
    backend = make_backend("float64")
    assert isinstance(backend.kernels, Kernels)
    assert isinstance(backend.kernels, DeviceKernels) == (backend.kind == "gpu")


# -- solver_update ---------------------------------------------------------------------------------
def reference_update(method: str, w: np.ndarray, g: np.ndarray, states: list[np.ndarray],
                     step: SolverStep) -> None:
    """interface.Kernels.solver_update's docstring, in float64, segment by segment."""
    for first, stop, (lr_mult, l2, l1) in zip(BOUNDS[:-1], BOUNDS[1:], COEFFICIENTS, strict=True):
        if lr_mult == 0:  # frozen
            continue
        part = slice(first, stop)
        grad = g[part] + l2 * w[part] + l1 * np.sign(w[part])
        if method == "adam":
            m, v = (state[part] for state in states)
            m[...] = step.beta1 * m + (1 - step.beta1) * grad
            v[...] = step.beta2 * v + (1 - step.beta2) * grad * grad
            lr_t = step.lr * math.sqrt(1 - step.beta2**step.t) / (1 - step.beta1**step.t)
            w[part] -= lr_t * lr_mult * m / (np.sqrt(v) + step.epsilon)
        else:
            velocity = states[0][part]
            previous = velocity.copy()
            velocity[...] = step.momentum * velocity - step.lr * lr_mult * grad
            if method == "sgd":
                w[part] += velocity
            else:
                w[part] += -step.momentum * previous + (1 + step.momentum) * velocity


def run_update(backend: Any, method: str, w: np.ndarray, g: np.ndarray,
               states: list[np.ndarray], step: SolverStep,
               coefficients: np.ndarray = COEFFICIENTS) -> list[np.ndarray]:
    """The library's update of copies of the arrays: [w, g, *states] afterwards, on the host."""
    arrays = [backend.from_host(a.copy()) for a in (w, g, *states)]  # the CPU's is no copy
    backend.kernels.solver_update(method, arrays[0], arrays[1], arrays[2:],
                                  backend.from_host(BOUNDS, dtype=np.int64),
                                  backend.from_host(coefficients, dtype=np.float64), step)
    backend.synchronize()
    return [backend.to_host(a) for a in arrays]


@pytest.mark.parametrize("method", ["sgd", "nesterov", "adam"])
def test_solver_update_follows_the_contract(make_backend, method: str) -> None:
    rng = np.random.default_rng(5)
    n = int(BOUNDS[-1])
    w, g = rng.normal(size=n), rng.normal(size=n)
    states = [rng.normal(size=n)] if method != "adam" else [rng.normal(size=n),
                                                             rng.uniform(0.1, 1, size=n)]
    got = run_update(make_backend("float64"), method, w, g, states, STEP)
    expected = [w.copy(), g.copy(), *(s.copy() for s in states)]
    reference_update(method, expected[0], expected[1], expected[2:], STEP)
    for name, value, reference in zip(["w", "grads", "state 1", "state 2"], got, expected,
                                      strict=False):
        np.testing.assert_allclose(value, reference, rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("method", ["sgd", "nesterov", "adam"])
def test_solver_update_stores_no_subnormal_number(make_backend, method: str) -> None:
    """Weights without a data gradient decay under L2 towards zero: below the smallest normal
    number every library stores zero (the CPU's GEMMs run 100x slower on subnormals)."""
    tiny = smallest_normal(np.float32)
    n = int(BOUNDS[-1])
    w = np.full(n, 3 * tiny, dtype=np.float32)
    w[::2] *= -1
    w[::7] = 0.5
    reference = w.astype(np.float64)
    states = [np.zeros(n, dtype=np.float32) for _ in range(2 if method == "adam" else 1)]
    backend = make_backend("float32")
    step = SolverStep(lr=2.5, momentum=0.0, beta1=0.9, beta2=0.99, epsilon=1e-6, t=1)
    for t in range(1, 4):
        w, _, *states = run_update(backend, method, w, np.zeros(n, dtype=np.float32), states,
                                   SolverStep(**{**step.__dict__, "t": t}))
        for name, array in [("w", w)] + [(f"state {i}", s) for i, s in enumerate(states)]:
            magnitude = np.abs(array)
            assert not ((magnitude > 0) & (magnitude < tiny)).any(), (name, t)
    # The libraries differ only where x86's FTZ flushes an intermediate: a weight may stay at a
    # few times tiny where IEEE arithmetic decays it, and Adam (which divides by sqrt(v) + eps)
    # skips a step that IEEE arithmetic scales up from a subnormal moment to ~1e-25.
    reference_states = [np.zeros(n) for _ in states]
    for update in range(1, 4):
        reference_update(method, reference, np.zeros(n), reference_states,
                         SolverStep(**{**step.__dict__, "t": update}))
    np.testing.assert_allclose(w, reference, rtol=1e-4, atol=1e-24)


@pytest.mark.parametrize("method", ["sgd", "nesterov", "adam"])
def test_solver_update_leaves_a_frozen_segment_bit_for_bit(make_backend, method: str) -> None:
    """lr_mult 0 (a stage's train_only freezes every other layer so) keeps weights and states as
    they were, subnormals included: a frozen layer must come out of a stage unchanged."""
    coefficients = np.array([[1.0, 0.1, 0.0], [0.0, 0.1, 0.05], [0.5, 0.2, 0.3]])
    tiny = smallest_normal(np.float32)
    n = int(BOUNDS[-1])
    rng = np.random.default_rng(9)
    w = (rng.normal(size=n) * np.where(np.arange(n) % 2, 1.0, tiny / 4)).astype(np.float32)
    g = rng.normal(size=n).astype(np.float32)
    states = [rng.uniform(0.1, 1, size=n).astype(np.float32)
              for _ in range(2 if method == "adam" else 1)]
    got = run_update(make_backend("float32"), method, w, g, states, STEP, coefficients)
    frozen = slice(BOUNDS[1], BOUNDS[2])
    assert (w[frozen] != 0).all() and (np.abs(w[frozen]) < tiny).any()
    for before, after in zip([w, g, *states], got, strict=True):
        np.testing.assert_array_equal(after[frozen], before[frozen])
    assert not np.array_equal(got[0][:BOUNDS[1]], w[:BOUNDS[1]])


# -- gaussian_recon_loss ---------------------------------------------------------------------------
RECON_CASES = {
    "plain": {},
    "beta": {"beta": 0.5},
    "mean_sd": {"mean_inv_var": 4.0},
    "ivar": {"ivar": True},
    "mask, noise variance, beta": {"ivar": True, "mask": True, "noise_variance": True,
                                   "beta": 0.5},
    "mask, mean_sd": {"mask": True, "mean_inv_var": 4.0},
}


def reference_recon(mu, sigma, x, scale, beta, mean_inv_var, ivar, mask, noise_variance):
    """interface.Kernels.gaussian_recon_loss's docstring, in float64."""
    used = np.ones_like(mu, dtype=bool)
    if mask is not None:
        used &= mask == 0
    if ivar is not None:
        used &= ivar > 0
    v = sigma**2 + (np.divide(1, ivar, out=np.zeros_like(ivar), where=ivar > 0)
                    if noise_variance else 0)
    r = x - mu
    loss = 0.5 * scale * np.sum((np.log(2 * np.pi) + np.log(v) + r * r / v)[used])
    weight = v**beta
    dmu = scale * -r * mean_inv_var if mean_inv_var else scale * -r / v * weight
    dsigma = scale * sigma * (1 - r * r / v) / v * weight
    return loss, np.where(used, dmu, 0), np.where(used, dsigma, 0)


@pytest.mark.parametrize("case", list(RECON_CASES))
@pytest.mark.parametrize("gradients", ["both", "sigma only", "none"])
def test_gaussian_recon_loss_follows_the_contract(make_backend, case: str,
                                                  gradients: str) -> None:
    options = RECON_CASES[case]
    rng = np.random.default_rng(11)
    shape = (6, 7)
    mu, x = rng.normal(size=shape), rng.normal(size=shape)
    sigma = rng.uniform(0.3, 2.0, size=shape)
    ivar = np.where(rng.random(shape) < 0.2, 0.0, rng.uniform(0.5, 4, size=shape))
    mask = (rng.random(shape) < 0.2).astype(np.float64)
    ivar, mask = (ivar if options.get("ivar") else None), (mask if options.get("mask") else None)
    beta, mean_inv_var = options.get("beta", 0.0), options.get("mean_inv_var", 0.0)
    noise_variance = options.get("noise_variance", False)
    loss, dmu, dsigma = reference_recon(mu, sigma, x, 0.3, beta, mean_inv_var, ivar, mask,
                                        noise_variance)
    backend = make_backend("float64")
    device = [None if a is None else backend.from_host(a) for a in (mu, sigma, x, ivar, mask)]
    out = backend.from_host(np.full(1, np.nan))
    grads = [backend.from_host(np.full(shape, np.nan)) for _ in range(2)]
    wanted = {"both": grads, "sigma only": [None, grads[1]], "none": [None, None]}[gradients]
    backend.kernels.gaussian_recon_loss(*device[:3], 0.3, beta, mean_inv_var, out, *wanted,
                                        ivar=device[3], mask=device[4],
                                        noise_variance=noise_variance)
    np.testing.assert_allclose(backend.to_host(out)[0], loss, rtol=1e-12)
    for given, reference in zip(wanted, (dmu, dsigma), strict=True):
        if given is not None:
            np.testing.assert_allclose(backend.to_host(given), reference, rtol=1e-11,
                                       atol=1e-14)


# -- InnerProduct's bias and neuron ----------------------------------------------------------------
@pytest.mark.parametrize("neuron", [Identity(), ReLU(0.05), Exponential(),
                                    Exponential(cap=0.5, shift=0.001)], ids=repr)
def test_bias_and_neuron_ops_follow_the_contract(make_backend, neuron: Any) -> None:
    rng = np.random.default_rng(2)
    pre, dy = rng.normal(size=(5, 33)), rng.normal(size=(5, 33))
    bias = rng.normal(size=33)
    shifted = pre + bias
    capped = np.exp(np.minimum(shifted, getattr(neuron, "cap", 0.0)))
    y_ref = {"Identity": shifted, "ReLU": np.maximum(shifted, 0.05),
             "Exponential": capped + neuron.offset}[type(neuron).__name__]
    slope = {"Identity": 1.0, "ReLU": (shifted > 0.05) * 1.0,
             "Exponential": capped * (shifted <= getattr(neuron, "cap", 0.0))}[
        type(neuron).__name__]
    backend = make_backend("float64")
    pre_d, bias_d = backend.from_host(pre), backend.from_host(bias)
    y, dpre, bias_grad = (backend.from_host(np.full(s, np.nan)) for s in (pre.shape, pre.shape, 33))
    backend.kernels.bias_neuron_forward(neuron, pre_d, bias_d, y)
    backend.kernels.neuron_backward_column_sum(neuron, pre_d, y, backend.from_host(dy), dpre,
                                               bias_grad)
    np.testing.assert_allclose(backend.to_host(pre_d), shifted, rtol=1e-14)
    np.testing.assert_allclose(backend.to_host(y), y_ref, rtol=1e-13)
    np.testing.assert_allclose(backend.to_host(dpre), slope * dy, rtol=1e-13)
    np.testing.assert_allclose(backend.to_host(bias_grad), (slope * dy).sum(axis=0), rtol=1e-12,
                               atol=1e-14)


# -- the seams -----------------------------------------------------------------------------------
def test_the_solver_hands_the_policys_numbers_to_the_kernel(monkeypatch) -> None:
    """The learning rate's path runs one way: policy -> Solver.step_numbers -> kernels."""
    entries = [
        {"type": "MemoryData", "name": "data", "tops": ["x", "y"], "batch_size": 2},
        {"type": "InnerProduct", "name": "out", "bottoms": ["x"], "tops": ["p"], "output_dim": 3},
        {"type": "SquareLoss", "name": "loss", "bottoms": ["p", "y"]},
    ]
    data = {"data": {"x": np.ones((2, 4)), "y": np.zeros((2, 3))}}
    net = build_net(entries, data)
    config = SolverConfig.from_mapping(
        {"method": "adam", "base_lr": 0.1, "lr_policy": {"type": "step", "gamma": 0.5,
                                                         "stepsize": 2}}, "test")
    solver = make_solver(config, net)
    calls: list[tuple[Any, ...]] = []
    # the library may be the process's shared one: monkeypatch puts it back
    monkeypatch.setattr(net.backend.kernels, "solver_update",
                        lambda *arguments: calls.append(arguments))
    for _ in range(5):
        solver.update()
    steps = [call[-1] for call in calls]
    assert [s.t for s in steps] == [1, 2, 3, 4, 5]
    assert [s.lr for s in steps] == [config.lr_policy.rate(0.1, t, 0) for t in range(1, 6)]
    assert {s.lr for s in steps} == {0.1, 0.05, 0.025}
    assert all(isinstance(a, (str, np.ndarray, list, SolverStep)) for a in calls[0])
