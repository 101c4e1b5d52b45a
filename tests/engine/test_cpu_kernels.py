"""The CPU backend's compiled loops (kernels/cpu/*.c) against its NumPy paths, across threads,
and how they are built, cached and switched off."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from mochapy.backends import CPUBackend, cpu_kernels
from mochapy.backends.numpy_kernels import NumPyKernels
from mochapy.errors import BackendError
from mochapy.net import Net
from mochapy.neurons import Exponential, Identity, ReLU, Sigmoid, Tanh
from mochapy.solvers import SolverConfig, make_solver
from tests.helpers import make_config

WIDTH = 300  # 300 x 300 weights: over PARALLEL_MIN, so the loops split over threads


@pytest.fixture(scope="module")
def library() -> object:
    loaded = cpu_kernels.load()
    if isinstance(loaded, str):
        pytest.skip(f"the compiled CPU loops are not available: {loaded}")
    return loaded.path


def solver_on(backend: CPUBackend, method: str, **fields):
    entries = [
        {"type": "MemoryData", "name": "data", "tops": ["x", "y"], "batch_size": 4},
        {"type": "InnerProduct", "name": "hidden", "bottoms": ["x"], "tops": ["h"],
         "output_dim": WIDTH, "neuron": "ReLU", "weight_regu": {"type": "L1", "coefficient": 2.0},
         "weight_init": {"type": "Gaussian", "std": 0.1}},
        {"type": "InnerProduct", "name": "out", "bottoms": ["h"], "tops": ["pred"],
         "output_dim": WIDTH, "bias_lr": 3.0, "weight_init": {"type": "Gaussian", "std": 0.1}},
        {"type": "SquareLoss", "name": "loss", "bottoms": ["pred", "y"]},
    ]
    rng = np.random.default_rng(0)
    data = {"data": {"x": rng.standard_normal((8, WIDTH)), "y": rng.standard_normal((8, WIDTH))}}
    configs = [make_config(e["type"], **{k: v for k, v in e.items() if k != "type"})
               for e in entries]
    net = Net("kernels", backend, configs, seed=3, memory_data=data)
    config = SolverConfig(method=method, base_lr=0.01, momentum=0.8, regu_coef=0.01, **fields)
    return make_solver(config, net)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", ["sgd", "nesterov", "adam"])
def test_compiled_solver_update_matches_numpy(method, dtype, library) -> None:
    compiled = solver_on(CPUBackend(dtype, compiled=True), method)
    numpy = solver_on(CPUBackend(dtype, compiled=False), method)
    assert isinstance(compiled.backend.kernels, cpu_kernels.CPUKernels)
    assert isinstance(numpy.backend.kernels, NumPyKernels)
    for _ in range(5):
        for solver in (compiled, numpy):
            solver.net.forward_backward()
            solver.update()
    tolerance = {"float32": 1e-5, "float64": 1e-12}[dtype]
    np.testing.assert_allclose(compiled.net.params.data, numpy.net.params.data,
                               rtol=tolerance, atol=tolerance)
    for name in compiled.state_names:
        np.testing.assert_allclose(compiled.state[name], numpy.state[name],
                                   rtol=tolerance, atol=tolerance * 1e-3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_update_flushes_subnormal_weights_and_moments_to_zero(dtype, library) -> None:
    """Weights without a data gradient decay under L2 + Adam into subnormals, which x86 multiplies
    ~100x slower; the compiled update leaves zeros instead (and the caller's float mode as it was:
    a subnormal product computed after the update is still subnormal)."""
    solver = solver_on(CPUBackend(dtype, compiled=True), "adam")
    tiny = np.finfo(dtype).tiny
    params = solver.net.params
    params.data[:] = tiny * 0.25
    params.grad[:] = 0.0
    for name in solver.state_names:
        solver.state[name][:] = tiny * 0.25
    solver.update()
    for array in (params.data, *(solver.state[name] for name in solver.state_names)):
        assert np.count_nonzero(array) == 0
    assert np.multiply(np.array(tiny, dtype), np.array(0.25, dtype)) != 0


def random_recon_inputs(n: int, dtype: str, seed: int = 1) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(n).astype(dtype)
    sigma = (0.05 + rng.random(n)).astype(dtype)
    x = (mu + sigma * rng.standard_normal(n)).astype(dtype)
    return mu, sigma, x


@pytest.mark.parametrize(("beta", "mean_inv_var"), [(0.0, 0.0), (0.5, 0.0), (1.0, 0.0),
                                                    (0.0, 16.0)])
def test_compiled_gaussian_recon_loss_matches_the_formula(beta, mean_inv_var, library) -> None:
    kernels = cpu_kernels.CPUKernels(library, threads=2)
    n = 3 * cpu_kernels.PARALLEL_MIN + 17  # a ragged last block and an uneven split
    mu, sigma, x = random_recon_inputs(n, "float64")
    dmu, dsigma, loss = np.empty(n), np.empty(n), np.empty(1)
    options = (0.25, beta, mean_inv_var)
    kernels.gaussian_recon_loss(mu, sigma, x, *options, loss, dmu, dsigma)
    z = (x - mu) / sigma
    expected = 0.125 * np.sum(np.log(2 * np.pi) + 2 * np.log(sigma) + z * z)
    assert loss[0] == pytest.approx(expected, rel=1e-12)
    weight = 0.25 * sigma ** (2 * beta)
    dmu_expected = 0.25 * (mu - x) * mean_inv_var if mean_inv_var else -weight * z / sigma
    np.testing.assert_allclose(dmu, dmu_expected, rtol=1e-12)
    np.testing.assert_allclose(dsigma, weight * (1 - z * z) / sigma, rtol=1e-12, atol=1e-13)
    test_phase = np.empty(1)
    kernels.gaussian_recon_loss(mu, sigma, x, *options, test_phase, None, None)
    assert test_phase[0] == loss[0]
    only_sigma = np.empty(n)
    kernels.gaussian_recon_loss(mu, sigma, x, *options, test_phase, None, only_sigma)
    np.testing.assert_array_equal(only_sigma, dsigma)


def test_the_log_sd_sum_without_a_log_per_pixel_is_exact_to_float32(library) -> None:
    """The loop sums log sigma from exponents and mantissa products: over sds from 1e-30 to
    1e30 it matches float64 logs closer than float32's rounding of the inputs would show."""
    kernels = cpu_kernels.CPUKernels(library, threads=1)
    n = 2 * cpu_kernels.LOSS_BLOCK + 700  # whole and ragged chunks and blocks
    rng = np.random.default_rng(8)
    sigma = np.exp(rng.uniform(-69, 69, n)).astype(np.float32)
    mu, x = np.zeros(n, np.float32), np.zeros(n, np.float32)
    loss = np.empty(1, np.float32)
    kernels.gaussian_recon_loss(mu, sigma, x, 1.0, 0.0, 0.0, loss, None, None)
    expected = 0.5 * np.sum(np.log(2 * np.pi) + 2 * np.log(sigma.astype(np.float64)))
    assert loss[0] == pytest.approx(expected, rel=1e-6, abs=1e-6 * n)


@pytest.mark.parametrize("unusual", [0.0, 1e-40, -1.0, np.inf, np.nan])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_sd_that_is_not_a_positive_normal_number_gives_numpys_loss(unusual, dtype,
                                                                      library) -> None:
    """0, a subnormal, a negative, inf and NaN among the sds: the loss is NumPy's (-inf, a
    finite number, NaN, ...), as when each pixel's log is taken."""
    kernels = cpu_kernels.CPUKernels(library, threads=1)
    mu, sigma, x = (a.reshape(3, 1000) for a in random_recon_inputs(3000, dtype))
    sigma[1, 234] = unusual
    losses = []
    for backend in (kernels, CPUBackend(dtype, compiled=False).kernels):
        loss = np.empty(1, dtype)
        with np.errstate(all="ignore"):
            backend.gaussian_recon_loss(mu, sigma, x, 0.5, 0.0, 0.0, loss, None, None)
        losses.append(loss[0])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_results_do_not_depend_on_the_number_of_threads(library) -> None:
    """Elementwise updates split anywhere; loss sums go per fixed block, then in order."""
    one, three = (cpu_kernels.CPUKernels(library, threads=t) for t in (1, 3))
    n = 5 * cpu_kernels.PARALLEL_MIN + 3
    mu, sigma, x = random_recon_inputs(n, "float32")
    results = []
    for kernels in (one, three):
        grads, loss = (np.empty(n, np.float32), np.empty(n, np.float32)), np.empty(1, np.float32)
        kernels.gaussian_recon_loss(mu, sigma, x, 0.01, 0.0, 0.0, loss, *grads)
        results.append((loss, *grads))
    for a, b in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_threads_split_big_arrays_on_aligned_boundaries(library) -> None:
    kernels = cpu_kernels.CPUKernels(library, threads=3)
    n = 10 * cpu_kernels.PARALLEL_MIN + 5
    parts = kernels._parts(n, cpu_kernels.ALIGN, n)
    assert len(parts) <= 3 * cpu_kernels.PARTS_PER_THREAD and len(parts) > 3
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(stop == start for (_, stop), (start, _) in zip(parts, parts[1:], strict=False))
    assert all(start % cpu_kernels.ALIGN == 0 and start % cpu_kernels.LOSS_BLOCK == 0
               for start, _ in parts)
    assert kernels._parts(100, cpu_kernels.ALIGN, 100) == [(0, 100)]  # small: calling thread
    columns = kernels._parts(4761, cpu_kernels.COLUMN_ALIGN, 100 * 4761)  # an (N, 4761) matrix
    assert len(columns) == 3 * cpu_kernels.PARTS_PER_THREAD
    assert all(start % 16 == 0 for start, _ in columns) and columns[-1][1] == 4761


NEURONS = [Identity(), ReLU(), ReLU(epsilon=0.05), Exponential(), Exponential(cap=0.0),
           Exponential(cap=0.0, shift=0.001), Sigmoid(), Tanh()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("neuron", NEURONS, ids=repr)
@pytest.mark.parametrize("threads", [1, 3])
def test_compiled_bias_and_neuron_match_numpy(neuron, dtype, threads, library) -> None:
    """Forward (pre += bias, y = f(pre)) and backward (dpre, bias gradient) against the NumPy
    path, on an (N, out) matrix that splits over threads; NaN stays NaN."""
    kernels = cpu_kernels.CPUKernels(library, threads=threads)
    rng = np.random.default_rng(5)
    rows, cols = 90, 1003  # 90 x 1003 > PARALLEL_MIN; 1003 columns split off cache-line bounds
    gemm_out = (rng.standard_normal((rows, cols)) * 3).astype(dtype)
    gemm_out[0, :3] = [np.nan, 200.0, -200.0]  # NaN, and inputs where exp overflows/underflows
    bias = rng.standard_normal(cols).astype(dtype)
    dy = rng.standard_normal((rows, cols)).astype(dtype)
    backend = CPUBackend(dtype, compiled=False)

    pre, y = gemm_out.copy(), np.empty_like(gemm_out)
    kernels.bias_neuron_forward(neuron, pre, bias, y)
    expected_pre, expected_y = gemm_out + bias, np.empty_like(gemm_out)
    neuron.forward(backend, expected_pre, expected_y)
    # A few units in the last place, relative, or absolute on numbers near 1: sigmoid near 0 and
    # tanh's slope 1 - y^2 carry the rounding of the O(1) numbers they are computed from.
    tolerance = {"float32": 5e-7, "float64": 1e-15}[dtype]
    np.testing.assert_array_equal(pre, expected_pre)
    np.testing.assert_allclose(y, expected_y, rtol=tolerance, atol=tolerance)

    dpre, bias_grad = np.empty_like(dy), np.empty_like(bias)
    kernels.neuron_backward_column_sum(neuron, pre, y, dy, dpre, bias_grad)
    expected_dpre = np.empty_like(dy)
    neuron.backward(backend, expected_pre, expected_y, dy, expected_dpre)
    np.testing.assert_allclose(dpre, expected_dpre, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(bias_grad, expected_dpre.sum(axis=0), rtol=1e-5, atol=1e-5)


def test_an_identity_neuron_works_in_place(library) -> None:
    """pre and y the same buffer, dpre and dy the same buffer: what InnerProduct passes."""
    kernels = cpu_kernels.CPUKernels(library, threads=2)
    rng = np.random.default_rng(6)
    values = rng.standard_normal((70, 1000)).astype(np.float32)
    bias, dy = rng.standard_normal(1000).astype(np.float32), values[::-1].copy()
    y = values.copy()
    kernels.bias_neuron_forward(Identity(), y, bias, y)
    np.testing.assert_array_equal(y, values + bias)
    gradient, bias_grad = dy.copy(), np.empty(1000, np.float32)
    kernels.neuron_backward_column_sum(Identity(), y, y, gradient, gradient, bias_grad)
    np.testing.assert_array_equal(gradient, dy)
    np.testing.assert_array_equal(bias_grad, dy.sum(axis=0))


def test_sources_compile_cleanly_with_warnings_as_errors(tmp_path) -> None:
    for source in cpu_kernels.sources():
        done = subprocess.run(
            [*cpu_kernels.compiler(), *cpu_kernels.FLAGS, "-Wall", "-Wextra", "-Werror",
             str(source), "-o", str(tmp_path / (source.stem + ".so"))],
            capture_output=True, text=True,
        )
        assert done.returncode == 0, done.stderr


def test_a_build_is_cached_and_reused(tmp_path, monkeypatch, library) -> None:
    built = cpu_kernels.build_library(tmp_path)
    assert built.parent == tmp_path and built.exists()
    stamp = built.stat().st_mtime_ns
    assert cpu_kernels.build_library(tmp_path) == built
    assert built.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no partial files left


def test_a_failed_build_says_why_in_one_line(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo fake; exit 0; fi\n"
                    "echo 'error: no compiler here' >&2\necho 'second line' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.raises(cpu_kernels.CPUKernelError, match="failed: error: no compiler here$"):
        cpu_kernels.build_library(tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir()]  # the partial output is removed


def test_without_the_loops_the_backend_uses_numpy_or_refuses_when_asked(monkeypatch) -> None:
    monkeypatch.setattr(cpu_kernels, "load", lambda: "no C compiler (cc)")
    backend = CPUBackend()
    assert isinstance(backend.kernels, NumPyKernels)
    assert "NumPy loops (no C compiler (cc))" in repr(backend)
    with pytest.raises(BackendError, match="compiled CPU loops are not available: no C comp"):
        CPUBackend(compiled=True)


def test_the_environment_switches_the_loops_off(monkeypatch) -> None:
    monkeypatch.setenv("MOCHAPY_CPU_KERNELS", "0")
    cpu_kernels.load.cache_clear()
    try:
        assert cpu_kernels.load() == "switched off by MOCHAPY_CPU_KERNELS"
        assert isinstance(CPUBackend().kernels, NumPyKernels)
    finally:
        cpu_kernels.load.cache_clear()


def test_a_thread_count_applies_to_the_loops_and_to_blas(library, monkeypatch) -> None:
    with threadpool_limits(limits=None, user_api="blas"):  # restores BLAS's count on exit
        backend = CPUBackend(threads=1)
        assert backend.kernels.threads == 1 and "1 thread)" in repr(backend)
        assert {pool["num_threads"] for pool in threadpool_info()
                if pool["user_api"] == "blas"} == {1}
        monkeypatch.setenv("MOCHAPY_NUM_THREADS", "3")
        assert CPUBackend().kernels.threads == 3
