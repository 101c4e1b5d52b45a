"""Each CUDA kernel against NumPy, on fresh random inputs, with every output poisoned with NaN
before the call (so an element a kernel forgets to write fails the comparison). Marked `gpu`: run
on the device when CuPy sees one, else on the CUDA emulation (tests/gpu/cuda_emu). The Philox
reference's known-answer test and the tolerance checks run without either."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mochapy.neurons import Exponential, Identity, ReLU, Sigmoid, Tanh

DTYPES = ["float32", "float64"]
MASK32 = np.uint64(0xFFFFFFFF)



def tolerance(dtype: str) -> dict[str, float]:
    """Relative error of a few roundings in the dtype."""
    return {"rtol": 3e-6, "atol": 3e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}


def column_sum_tolerance(terms: np.ndarray, dtype: str) -> np.ndarray:
    """Allowed error of each column sum of `terms`: a few roundings of every term, so relative to
    the column's sum of |term|, not to its total (large terms that cancel keep their rounding)."""
    tol = tolerance(dtype)
    return tol["rtol"] * np.abs(terms.astype(np.float64)).sum(axis=0) + tol["atol"]


def test_column_sum_tolerance_takes_one_ulp_per_term_under_cancellation():
    """Exponential at (100, 4761) in float32 has columns of terms up to ~70 that sum to about -28
    (sum |term| ~ 7000): one ulp of exp() per term moves the sum by ~1e-3, which a tolerance of
    3e-6 per row rejected. A wrong sum (one term lost) must still fail."""
    rng = np.random.default_rng(7)
    terms = rng.uniform(40, 100, size=(100, 1)).astype(np.float32) * np.where(
        np.arange(100)[:, None] % 2 == 0, 1, -1
    ).astype(np.float32)
    terms[-1] += np.float32(-28) - terms.astype(np.float64).sum()
    exact = terms.astype(np.float64).sum(axis=0)
    one_ulp_off = np.nextafter(terms, np.float32(np.inf)).astype(np.float64).sum(axis=0)
    bound = column_sum_tolerance(terms, "float32")
    assert np.abs(one_ulp_off - exact)[0] > 3e-6 * 100  # what the old tolerance refused
    assert (np.abs(one_ulp_off - exact) <= bound).all()
    assert (np.abs(exact - terms[0].astype(np.float64) - exact) > bound).all()


# -- a NumPy Philox4x32-10 + Box-Muller, the reference for kernels/random_normal.cu ----------------
def philox4x32_10(counter: list[np.ndarray], key: tuple[int, int]) -> list[np.ndarray]:
    """Random123's Philox4x32 with 10 rounds, vectorised over uint64 arrays holding 32-bit words."""
    c = [np.asarray(word, dtype=np.uint64) & MASK32 for word in counter]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for round_index in range(10):
        if round_index:
            k0 = (k0 + np.uint64(0x9E3779B9)) & MASK32
            k1 = (k1 + np.uint64(0xBB67AE85)) & MASK32
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & MASK32,
             (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & MASK32]
    return c


def philox_normals(n: int, seed: int, draw: int, dtype: str) -> np.ndarray:
    """What philox_normal writes for `n` values of draw number `draw`."""
    t = np.dtype(dtype).type
    groups = np.arange((n + 3) // 4, dtype=np.uint64)
    words = philox4x32_10(
        [groups & MASK32, groups >> np.uint64(32), np.full_like(groups, draw & 0xFFFFFFFF),
         np.full_like(groups, draw >> 32)],
        (seed & 0xFFFFFFFF, seed >> 32),
    )
    uniforms = [w.astype(dtype) * t(2.0**-32) + t(2.0**-33) for w in words]
    values = []
    for pair in range(2):
        radius = np.sqrt(t(-2) * np.log(uniforms[2 * pair]))
        angle = t(2 * np.pi) * uniforms[2 * pair + 1].astype(np.float64)
        values += [radius * np.cos(angle).astype(dtype), radius * np.sin(angle).astype(dtype)]
    return np.stack(values, axis=1).ravel()[:n]


def test_philox_reference_matches_random123_known_answers():
    cases = [
        ([0, 0, 0, 0], (0, 0), [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, (0xFFFFFFFF, 0xFFFFFFFF),
         [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], (0xA4093822, 0x299F31D0),
         [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
    ]
    for counter, key, expected in cases:
        got = philox4x32_10([np.array([w]) for w in counter], key)
        assert [int(w[0]) for w in got] == expected


def test_philox_reference_normals_look_normal():
    values = philox_normals(200_001, seed=12345, draw=3, dtype="float64")
    assert values.shape == (200_001,)
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01
    assert not np.array_equal(values[:100], philox_normals(100, 12345, 4, "float64"))


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=DTYPES)
def gpu(request: pytest.FixtureRequest, gpu_runtime: Any) -> Any:
    from mochapy.backends.gpu import GPUBackend

    return GPUBackend(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def device(gpu: Any, host: np.ndarray) -> Any:
    return gpu.from_host(np.asarray(host, dtype=gpu.dtype))


def poisoned(gpu: Any, shape: tuple[int, ...] | int) -> Any:
    return gpu.xp.full(shape, np.nan, dtype=gpu.dtype)


def host(gpu: Any, array: Any) -> np.ndarray:
    return gpu.to_host(array)


# -- neurons and the InnerProduct kernels ----------------------------------------------------------
NEURONS = [Identity(), ReLU(0.0), ReLU(0.05), Exponential(), Exponential(shift=0.001), Sigmoid(),
           Tanh()]


def neuron_input(rng: np.random.Generator, dtype: str, shape: tuple[int, int]) -> np.ndarray:
    """Normal values plus the edge cases: around 0 and epsilon, past exp's cap at 88."""
    x = rng.normal(scale=3.0, size=shape).astype(dtype)
    x.flat[:6] = [0.0, 0.05, 87.9, 88.0, 95.0, -120.0]
    return x


@pytest.mark.gpu
@pytest.mark.parametrize("neuron", NEURONS, ids=repr)
def test_neuron_forward_and_backward_match_numpy(gpu: Any, rng: np.random.Generator, neuron: Any):
    dtype = gpu.dtype.name
    x = neuron_input(rng, dtype, (37, 53))
    dy = rng.normal(size=x.shape).astype(dtype)
    y_ref, dx_ref = np.empty_like(x), np.empty_like(x)
    neuron._forward_cpu(x, y_ref)
    neuron._backward_cpu(x, y_ref, dy, dx_ref)
    y, dx = poisoned(gpu, x.shape), poisoned(gpu, x.shape)
    gpu.kernels.neuron_forward(neuron.code, neuron.parameter, neuron.offset, device(gpu, x), y)
    gpu.kernels.neuron_backward(neuron.code, neuron.parameter, device(gpu, x), y,
                                device(gpu, dy), dx)
    np.testing.assert_allclose(host(gpu, y), y_ref, **tolerance(dtype))
    np.testing.assert_allclose(host(gpu, dx), dx_ref, **tolerance(dtype))
    assert np.isfinite(host(gpu, y)).all()


@pytest.mark.gpu
def test_neurons_keep_nan_visible(gpu: Any):
    x = device(gpu, np.array([[np.nan, 1.0]]))
    for neuron in NEURONS:
        y = poisoned(gpu, (1, 2))
        y[0, 0] = 0
        gpu.kernels.neuron_forward(neuron.code, neuron.parameter, neuron.offset, x, y)
        assert np.isnan(host(gpu, y)[0, 0]), neuron


@pytest.mark.gpu
@pytest.mark.parametrize("neuron", NEURONS, ids=repr)
@pytest.mark.parametrize("shape", [(100, 128), (100, 4761), (100, 8), (3, 33)])
def test_bias_neuron_forward_and_fused_backward_match_numpy(
    gpu: Any, rng: np.random.Generator, neuron: Any, shape: tuple[int, int]
):
    dtype = gpu.dtype.name
    pre = neuron_input(rng, dtype, shape)
    bias = rng.normal(size=shape[1]).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    pre_ref = pre + bias
    y_ref, dpre_ref = np.empty_like(pre), np.empty_like(pre)
    neuron._forward_cpu(pre_ref, y_ref)
    neuron._backward_cpu(pre_ref, y_ref, dy, dpre_ref)
    pre_gpu, bias_grad = device(gpu, pre), poisoned(gpu, shape[1])
    y, dpre = poisoned(gpu, shape), poisoned(gpu, shape)
    gpu.kernels.bias_neuron_forward(neuron, pre_gpu, device(gpu, bias), y)
    gpu.kernels.neuron_backward_column_sum(neuron, pre_gpu, y, device(gpu, dy), dpre, bias_grad)
    tol = tolerance(dtype)
    np.testing.assert_allclose(host(gpu, pre_gpu), pre_ref, **tol)
    np.testing.assert_allclose(host(gpu, y), y_ref, **tol)
    np.testing.assert_allclose(host(gpu, dpre), dpre_ref, **tol)
    error = np.abs(host(gpu, bias_grad) - dpre_ref.astype(np.float64).sum(axis=0))
    bound = column_sum_tolerance(dpre_ref, dtype)
    assert (error <= bound).all(), f"bias gradient off by {error.max():.3g} at {error.argmax()}"


# -- ElementWise, Power ----------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("operation", ["Add", "Subtract", "Multiply", "Divide"])
def test_elementwise_matches_numpy(gpu: Any, rng: np.random.Generator, operation: str):
    dtype = gpu.dtype.name
    a = rng.normal(size=(100, 8)).astype(dtype)
    b = (rng.uniform(0.5, 2.0, size=(100, 8)) * rng.choice([-1, 1], size=(100, 8))).astype(dtype)
    dy = rng.normal(size=a.shape).astype(dtype)
    ops = {"Add": (a + b, dy, dy), "Subtract": (a - b, dy, -dy),
           "Multiply": (a * b, dy * b, dy * a), "Divide": (a / b, dy / b, -(dy * (a / b)) / b)}
    y_ref, da_ref, db_ref = ops[operation]
    a_gpu, b_gpu, y = device(gpu, a), device(gpu, b), poisoned(gpu, a.shape)
    gpu.kernels.elementwise_forward(operation, a_gpu, b_gpu, y)
    da, db = poisoned(gpu, a.shape), poisoned(gpu, a.shape)
    gpu.kernels.elementwise_backward(operation, a_gpu, b_gpu, y, device(gpu, dy), da, db)
    tol = tolerance(dtype)
    np.testing.assert_allclose(host(gpu, y), y_ref, **tol)
    np.testing.assert_allclose(host(gpu, da), da_ref, **tol)
    np.testing.assert_allclose(host(gpu, db), db_ref, **tol)
    untouched = poisoned(gpu, a.shape)
    gpu.kernels.elementwise_backward(operation, a_gpu, b_gpu, y, device(gpu, dy), None, untouched)
    np.testing.assert_allclose(host(gpu, untouched), db_ref, **tol)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "power, scale, shift", [(2.0, 1.0, 0.0), (0.5, 2.0, 1.0), (-1.0, 1.0, 3.0)]
)
def test_power_matches_numpy(
    gpu: Any, rng: np.random.Generator, power: float, scale: float, shift: float
):
    dtype = gpu.dtype.name
    x = rng.uniform(0.1, 2.0, size=(50, 9)).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    base_ref = x * scale + shift
    base, y, dx = poisoned(gpu, x.shape), poisoned(gpu, x.shape), poisoned(gpu, x.shape)
    gpu.kernels.power_forward(device(gpu, x), scale, shift, power, base, y)
    gpu.kernels.power_backward(base, scale, power, device(gpu, dy), dx)
    tol = tolerance(dtype)
    np.testing.assert_allclose(host(gpu, base), base_ref, **tol)
    np.testing.assert_allclose(host(gpu, y), base_ref**power, **tol)
    np.testing.assert_allclose(host(gpu, dx), base_ref ** (power - 1) * power * scale * dy, **tol)


# -- losses ----------------------------------------------------------------------------------------
def loss_tolerance(dtype: str) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.gpu
@pytest.mark.parametrize(("beta", "mean_inv_var"), [(0.0, 0.0), (0.5, 0.0), (0.0, 9.0)])
@pytest.mark.parametrize("shape", [(100, 4761), (7, 3)])
def test_gaussian_recon_loss_value_and_gradients(
    gpu: Any, rng: np.random.Generator, beta: float, mean_inv_var: float, shape: tuple[int, int]
):
    dtype = gpu.dtype.name
    mu, x = rng.normal(size=shape), rng.normal(size=shape)
    sigma = rng.uniform(0.2, 2.0, size=shape)
    mu, x, sigma = (v.astype(dtype) for v in (mu, x, sigma))
    s = 0.7 / shape[0]
    m64, x64, s64 = (v.astype(np.float64) for v in (mu, x, sigma))
    loss_ref = 0.5 * s * np.sum(np.log(2 * np.pi) + 2 * np.log(s64) + (x64 - m64) ** 2 / s64**2)
    weight = s64 ** (2 * beta)
    dmu_ref = s * (m64 - x64) * (mean_inv_var or weight / s64**2)
    dsigma_ref = s * (1 / s64 - (x64 - m64) ** 2 / s64**3) * weight
    loss, dmu, dsigma = poisoned(gpu, 1), poisoned(gpu, shape), poisoned(gpu, shape)
    args = (device(gpu, mu), device(gpu, sigma), device(gpu, x), s, beta, mean_inv_var)
    gpu.kernels.gaussian_recon_loss(*args, loss, dmu, dsigma)
    tol = loss_tolerance(dtype)
    np.testing.assert_allclose(host(gpu, loss)[0], loss_ref, rtol=tol["rtol"])
    np.testing.assert_allclose(host(gpu, dmu), dmu_ref, **tol)
    np.testing.assert_allclose(host(gpu, dsigma), dsigma_ref, **tol)
    test_phase_loss = poisoned(gpu, 1)
    gpu.kernels.gaussian_recon_loss(*args, test_phase_loss, None, None)
    assert host(gpu, test_phase_loss)[0] == host(gpu, loss)[0]  # deterministic reduction


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(100, 8), (1000, 333)])
def test_gaussian_kl_loss_value_and_gradients(
    gpu: Any, rng: np.random.Generator, shape: tuple[int, int]
):
    dtype = gpu.dtype.name
    mu = rng.normal(size=shape).astype(dtype)
    sigma = rng.uniform(0.2, 2.0, size=shape).astype(dtype)
    s = 1.0 / shape[0]
    m64, s64 = mu.astype(np.float64), sigma.astype(np.float64)
    loss_ref = 0.5 * s * np.sum(m64**2 + s64**2 - 2 * np.log(s64) - 1)
    loss, dmu, dsigma = poisoned(gpu, 1), poisoned(gpu, shape), poisoned(gpu, shape)
    gpu.kernels.gaussian_kl_loss(device(gpu, mu), device(gpu, sigma), s, loss, dmu, dsigma)
    tol = loss_tolerance(dtype)
    np.testing.assert_allclose(host(gpu, loss)[0], loss_ref, rtol=tol["rtol"])
    np.testing.assert_allclose(host(gpu, dmu), s * m64, **tol)
    np.testing.assert_allclose(host(gpu, dsigma), s * (s64 - 1 / s64), **tol)


@pytest.mark.gpu
def test_square_loss_value_and_gradients(gpu: Any, rng: np.random.Generator):
    dtype = gpu.dtype.name
    pred, label = (rng.normal(size=(64, 5)).astype(dtype) for _ in range(2))
    s = 2.0 / 64
    r = pred.astype(np.float64) - label
    loss, dpred, dlabel = poisoned(gpu, 1), poisoned(gpu, r.shape), poisoned(gpu, r.shape)
    gpu.kernels.square_loss(device(gpu, pred), device(gpu, label), s, loss, dpred, dlabel)
    tol = loss_tolerance(dtype)
    np.testing.assert_allclose(host(gpu, loss)[0], 0.5 * s * np.sum(r * r), rtol=tol["rtol"])
    np.testing.assert_allclose(host(gpu, dpred), s * r, **tol)
    np.testing.assert_allclose(host(gpu, dlabel), -s * r, **tol)


# -- random numbers, data, loss totals -------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("n", [800, 4761 * 3 + 1])
def test_philox_normal_matches_the_reference_and_advances_on_the_device(gpu: Any, n: int):
    dtype = gpu.dtype.name
    seed = 0x1234_5678_9ABC_DEF0
    state = gpu.kernels.random_state(seed, counter=41)
    first, second = poisoned(gpu, n), poisoned(gpu, n)
    gpu.kernels.philox_normal(first, state)
    gpu.kernels.philox_normal(second, state)
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(host(gpu, first), philox_normals(n, seed, 41, dtype), **tol)
    np.testing.assert_allclose(host(gpu, second), philox_normals(n, seed, 42, dtype), **tol)
    assert gpu.kernels.read_counter(state) == 43
    gpu.kernels.write_counter(state, 41)
    again = poisoned(gpu, n)
    gpu.kernels.philox_normal(again, state)
    np.testing.assert_array_equal(host(gpu, again), host(gpu, first))


@pytest.mark.gpu
def test_gather_rows_takes_the_indexed_rows(gpu: Any, rng: np.random.Generator):
    data = rng.normal(size=(50, 3, 4)).astype(gpu.dtype)
    rows = rng.integers(0, 50, size=17)
    out = poisoned(gpu, (17, 3, 4))
    gpu.kernels.gather_rows(device(gpu, data), gpu.xp.asarray(rows, dtype=np.int64), out)
    np.testing.assert_array_equal(host(gpu, out), data[rows])


@pytest.mark.gpu
def test_noise_level_matches_the_layers_numpy_path(gpu: Any, rng: np.random.Generator):
    from mochapy.layers.noise_level import calibration, log_noise_sd

    images = (rng.normal(size=(37, 3, 20, 31)) * np.exp(rng.uniform(-6, 0, size=(37, 1, 1, 1)))
              ).astype(gpu.dtype)
    images[3] = 1.0  # no differences at all: the floor
    for clip, lag in ((3.0, 1), (1e30, 1), (3.0, 3)):  # 1e30: every difference kept
        out = poisoned(gpu, (37, 1))
        gpu.kernels.noise_level(device(gpu, images), clip, calibration(clip), 1e-5, lag, out)
        np.testing.assert_allclose(host(gpu, out)[:, 0], log_noise_sd(images, 1e-5, clip, lag),
                                   **tolerance(gpu.dtype.name))


@pytest.mark.gpu
def test_accumulate_losses_sums_through_the_pointer_table(gpu: Any):
    losses = [device(gpu, np.array([v])) for v in (1.5, -0.25, 4.0)]
    table = gpu.xp.asarray([loss.data.ptr for loss in losses], dtype=np.uint64)
    totals = gpu.xp.zeros(2, dtype=np.float64)
    for _ in range(3):
        gpu.kernels.accumulate_losses(table, totals)
    np.testing.assert_allclose(host(gpu, totals), [3 * 5.25, 3])


# -- GEMM engines ----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["cublas", "tiled", "cutensor", "cupy"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("m, n, k", [(100, 128, 4761), (100, 4761, 128), (7, 9, 5)])
def test_gemm_engines_match_numpy(
    gpu: Any, rng: np.random.Generator, engine: str, trans_a: bool, trans_b: bool,
    m: int, n: int, k: int,
):
    from mochapy.backends.gpu_gemm import EngineUnavailable

    try:
        gpu.use_gemm(engine)
    except EngineUnavailable as error:
        pytest.skip(str(error))
    a = rng.normal(size=(k, m) if trans_a else (m, k)).astype(gpu.dtype)
    b = rng.normal(size=(n, k) if trans_b else (k, n)).astype(gpu.dtype)
    out = poisoned(gpu, (m, n))
    gpu.gemm(device(gpu, a), device(gpu, b), out, trans_a=trans_a, trans_b=trans_b)
    ref = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    # Summation error grows at most like k; TF32 (10-bit mantissa) would be far outside this.
    per_term = 1e-6 if gpu.dtype.name == "float32" else 1e-13
    np.testing.assert_allclose(host(gpu, out), ref, rtol=0, atol=per_term * k)
