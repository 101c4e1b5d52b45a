"""The poster-form sd head (`neuron: Exponential`, no cap given) stays at most e^30, with no
gradient past it, on the NumPy and the compiled CPU paths: one unusual input cannot take an sd
to 1.7e38 (e^88) any more, and the loss's 1/sd^2 stays a normal float32 number."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mochapy.backends import CPUBackend
from mochapy.config import load_config
from mochapy.errors import BackendError
from mochapy.net import Net
from tests.helpers import EXAMPLES

SD_LAYERS = ("x_sigma", "x_sigma_floor")


def poster_sd_head(compiled: bool) -> Net:
    """The poster's decoder sd head alone: dec2 -> x_sigma (Exponential) -> floor."""
    try:
        backend = CPUBackend("float32", compiled=compiled)
    except BackendError as exc:
        pytest.skip(str(exc))
    config = load_config(str(EXAMPLES / "galaxy_vae_poster.yaml"))
    layers = [c for c in config.layers if c.name in SD_LAYERS]
    return Net("sd-head", backend, layers, inputs={"dec2": (128,)}, outputs=["x_sigma"],
               batch_size=2)


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "compiled"])
def test_the_decoder_sd_is_capped_at_e30_with_no_gradient_beyond(compiled: bool) -> None:
    net = poster_sd_head(compiled)
    bias = net.params.params["x_sigma.bias"]
    pre = np.linspace(25.0, 100.0, bias.data.size).astype(np.float32)  # below and far above
    bias.data[...] = pre  # the weights start at 0, so the pre-activation is the bias
    net.set_input("dec2", np.ones((2, 128)))
    net.forward()
    sd = net.fetch("x_sigma")
    expected = np.float32(np.exp(np.minimum(pre, 30.0), dtype=np.float64) + 0.001)
    np.testing.assert_allclose(sd, np.broadcast_to(expected, sd.shape), rtol=2e-6)
    assert sd.max() <= np.float32(math.exp(30.0) * (1 + 1e-6))
    assert np.isfinite(1 / sd.astype(np.float32) ** 2).all() and (1 / sd**2).min() > 1e-38
    net.blobs["x_sigma"].diff[...] = 1.0
    net.backward()
    grad = net.params.params["x_sigma.bias"].grad
    assert (grad[pre > 30.0] == 0).all() and (grad[pre < 30.0] > 0).all()
