"""InnerProduct: y = neuron(x W + b) against the closed form for every neuron; backward against
finite differences in float64, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from tests.helpers import LayerHarness, make_config

NEURON_FORMS = {
    "Identity": lambda v: v,
    "ReLU": lambda v: np.where(v > 0, v, 0.0),
    "Sigmoid": expit,
    "Tanh": np.tanh,
    "Exponential": np.exp,
}


@pytest.mark.parametrize("neuron", [*NEURON_FORMS, {"type": "ReLU", "epsilon": 0.05}],
                         ids=[*NEURON_FORMS, "ReLU-eps"])
def test_inner_product_forward_and_gradients(neuron, rng, backend) -> None:
    x = rng.normal(size=(4, 2, 3))
    config = make_config(
        "InnerProduct", name="ip", bottoms=["x"], tops=["y"], output_dim=5, neuron=neuron,
        bias_init={"type": "Gaussian", "std": 0.5},
    )
    harness = LayerHarness(config, {"x": x}, backend=backend)
    layer = harness.layer
    assert layer.weight.shape == (6, 5) and layer.bias.shape == (5,)
    layer.forward()
    pre = x.reshape(4, 6) @ harness.host(layer.weight.data) + harness.host(layer.bias.data)
    if isinstance(neuron, dict):
        expected = np.maximum(pre, neuron["epsilon"])
    else:
        expected = NEURON_FORMS[neuron](pre)
    np.testing.assert_allclose(harness.top(), expected, rtol=1e-12, atol=1e-14)
    harness.check_gradients()


def test_inner_product_gives_no_input_gradient_to_data(rng, backend) -> None:
    config = make_config("InnerProduct", name="ip", bottoms=["x"], tops=["y"],
                         output_dim=3)
    harness = LayerHarness(config, {"x": rng.normal(size=(4, 2))}, grad_bottoms=(),
                           backend=backend)
    grads = harness.gradients()
    assert set(grads) == {"ip.weight", "ip.bias"}
    harness.check_gradients()
