"""Every layer's GPU path against its CPU path: the same config, inputs, parameters and upstream
gradients; the GPU's outputs, input gradients and parameter gradients poisoned with NaN before the
call. Marked `gpu`: run on the device when CuPy sees one, else on the CUDA emulation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mochapy.backends import CPUBackend
from tests.helpers import LayerHarness, make_config

pytestmark = pytest.mark.gpu

NEURONS = ["Identity", "ReLU", {"type": "ReLU", "epsilon": 0.05}, "Exponential", "Sigmoid", "Tanh"]


@pytest.fixture(scope="module", params=["float32", "float64"])
def gpu(request: pytest.FixtureRequest, gpu_runtime: Any) -> Any:
    from mochapy.backends.gpu import GPUBackend

    return GPUBackend(request.param)


def tolerance(dtype: str) -> dict[str, float]:
    return {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-11, "atol": 1e-11}


def poison(harness: Any) -> None:
    """NaN into everything the layer is supposed to write."""
    layer = harness.layer
    inputs = [blob.data for blob in layer.bottoms]
    for top in layer.tops:
        if not any(top.data is data for data in inputs):  # Split's tops alias its bottom
            top.data.fill(np.nan)
    for blob in layer.bottoms:
        if blob.diff is not None:
            blob.diff.fill(np.nan)
    for param in layer.params:
        param.grad.fill(np.nan)
    if layer.loss_value is not None:
        layer.loss_value.fill(np.nan)


def compare(gpu: Any, config: Any, bottoms: dict[str, np.ndarray], **kwargs: Any):
    """Run the layer on both backends and compare tops, loss and every gradient."""
    cpu_harness = LayerHarness(config, bottoms, backend=CPUBackend(gpu.dtype.name), **kwargs)
    gpu_harness = LayerHarness(config, bottoms, backend=gpu, **kwargs)
    gpu_harness.store.load_host_arrays(cpu_harness.store.host_arrays(), "test")
    poison(gpu_harness)
    expected = cpu_harness.gradients()
    got = gpu_harness.gradients()  # on the host already
    tol = tolerance(gpu.dtype.name)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, err_msg=f"gradient {name}", **tol)
    for cpu_top, gpu_top in zip(cpu_harness.layer.tops, gpu_harness.layer.tops, strict=True):
        np.testing.assert_allclose(gpu.to_host(gpu_top.data), cpu_top.data,
                                   err_msg=f"top {cpu_top.name}", **tol)
    if config.has_loss:
        np.testing.assert_allclose(gpu_harness.layer.loss, cpu_harness.layer.loss, rtol=tol["rtol"])


@pytest.mark.parametrize("neuron", NEURONS, ids=str)
def test_inner_product(gpu: Any, neuron: Any, rng: np.random.Generator):
    config = make_config(
        "InnerProduct", name="ip", bottoms=["x"], tops=["y"], output_dim=37, neuron=neuron,
        bias_init={"type": "Gaussian", "std": 0.5},
    )
    compare(gpu, config, {"x": rng.normal(size=(20, 3, 23))})


def test_inner_product_without_input_gradient(gpu: Any, rng: np.random.Generator):
    config = make_config("InnerProduct", name="ip", bottoms=["x"], tops=["y"],
                         output_dim=128, neuron="ReLU")
    compare(gpu, config, {"x": rng.uniform(size=(100, 1, 69, 69))}, grad_bottoms=())


@pytest.mark.parametrize("operation", ["Add", "Subtract", "Multiply", "Divide"])
def test_element_wise(gpu: Any, operation: str, rng: np.random.Generator):
    config = make_config("ElementWise", name="ew", bottoms=["a", "b"], tops=["y"],
                         operation=operation)
    b = rng.uniform(0.5, 2.0, size=(100, 8)) * rng.choice([-1, 1], size=(100, 8))
    compare(gpu, config, {"a": rng.normal(size=(100, 8)), "b": b})


def test_power(gpu: Any, rng: np.random.Generator):
    config = make_config("Power", name="p", bottoms=["x"], tops=["y"], power=1.5,
                         scale=2.0, shift=0.25)
    compare(gpu, config, {"x": rng.uniform(0.1, 1.0, size=(10, 7))})


@pytest.mark.parametrize("options", [{}, {"beta": 0.5}, {"mean_sd": 0.3}])
def test_gaussian_recon_loss(gpu: Any, options: dict, rng: np.random.Generator):
    config = make_config("GaussianReconLoss", name="recon", bottoms=["mu", "sigma", "x"],
                         weight=0.7, **options)
    bottoms = {"mu": rng.normal(size=(100, 4761)), "sigma": rng.uniform(0.2, 2, size=(100, 4761)),
               "x": rng.normal(size=(100, 4761))}
    compare(gpu, config, bottoms, grad_bottoms=("mu", "sigma"))


@pytest.mark.parametrize("lag", [1, 2])
def test_noise_level(gpu: Any, lag: int, rng: np.random.Generator):
    """Forward only: the layer takes no gradient."""
    config = make_config("NoiseLevel", name="noise", bottoms=["x"], tops=["y"], lag=lag)
    scale = np.exp(rng.uniform(-7, -1, size=(100, 1, 1, 1)))
    images = scale * (rng.normal(size=(100, 1, 69, 69)) + 30 * (rng.random((100, 1, 69, 69)) < .01))
    images[0] = 0.25  # a flat image: the floor
    harnesses = [LayerHarness(config, {"x": images}, backend=backend, grad_bottoms=())
                 for backend in (CPUBackend(gpu.dtype.name), gpu)]
    poison(harnesses[1])
    for harness in harnesses:
        harness.layer.forward()
    np.testing.assert_allclose(gpu.to_host(harnesses[1].layer.tops[0].data),
                               harnesses[0].layer.tops[0].data, **tolerance(gpu.dtype.name))


def test_gaussian_kl_loss(gpu: Any, rng: np.random.Generator):
    config = make_config("GaussianKLLoss", name="kl", bottoms=["mu", "sigma"])
    compare(gpu, config,
            {"mu": rng.normal(size=(100, 8)), "sigma": rng.uniform(0.2, 2, size=(100, 8))})


def test_square_loss(gpu: Any, rng: np.random.Generator):
    config = make_config("SquareLoss", name="sq", bottoms=["pred", "label"], weight=3.0)
    compare(gpu, config,
            {"pred": rng.normal(size=(32, 1)), "label": rng.normal(size=(32, 1))})


def test_split(gpu: Any, rng: np.random.Generator):
    config = make_config("Split", name="s", bottoms=["x"], tops=["a", "b", "c"])
    compare(gpu, config, {"x": rng.normal(size=(6, 5))})


def test_concat(gpu: Any, rng: np.random.Generator):
    config = make_config("Concat", name="c", bottoms=["a", "b"], tops=["y"])
    compare(gpu, config, {"a": rng.normal(size=(6, 5)), "b": rng.normal(size=(6, 2))})


def test_slice(gpu: Any, rng: np.random.Generator):
    config = make_config("Slice", name="s", bottoms=["x"], tops=["a", "b"],
                         slice_point=[4])
    compare(gpu, config, {"x": rng.normal(size=(6, 7))})


def test_contrast_level(gpu: Any, rng: np.random.Generator):
    config = make_config("ContrastLevel", name="cl", bottoms=["x", "ab"], tops=["y"],
                         neuron={"type": "Exponential", "cap": 1.0})
    compare(gpu, config,
            {"x": rng.normal(size=(100, 4761)), "ab": rng.normal(scale=0.3, size=(100, 2))})


def test_random_normal_draws_fresh_numbers_and_resumes_them(gpu: Any):
    config = make_config("RandomNormal", name="eps", tops=["eps"], output_dims=[8])
    harness = LayerHarness(config, {}, backend=gpu, batch_size=100)
    layer = harness.layer
    layer.forward()
    first = gpu.to_host(layer.tops[0].data)
    saved = layer.state_dict()
    assert int(saved["counter"]) == 1
    layer.forward()
    second = gpu.to_host(layer.tops[0].data)
    assert not np.allclose(first, second)
    layer.load_state_dict(saved)
    layer.forward()
    np.testing.assert_array_equal(gpu.to_host(layer.tops[0].data), second)
    draws = np.concatenate([first.ravel(), second.ravel()])
    assert abs(draws.mean()) < 0.15 and abs(draws.std() - 1) < 0.1
