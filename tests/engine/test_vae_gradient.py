"""The whole galaxy VAE (examples/galaxy_vae_poster.yaml shrunk to 5x5 images and 16 hidden units,
fed by MemoryData, float64): its loss is the negative ELBO computed independently, and the gradient
of that loss w.r.t. every parameter matches central finite differences with the noise held fixed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.stats import norm

from mochapy.net import Net
from tests.helpers import (
    assert_gradient_close,
    central_difference,
    sample_indices,
    vae_layer_entries,
)

pytestmark = pytest.mark.usefixtures("cpu_loops")  # compiled CPU loops and NumPy paths


def frozen_objective(net: Net):
    """The loss as a function of the parameters alone: data position and RandomNormal's
    generator are restored before every forward, so each evaluation sees the same eps."""
    states = copy.deepcopy(net.layer_states())

    def objective() -> float:
        net.load_layer_states(states)
        net.forward()
        return net.loss()

    return objective


def numpy_negative_elbo(net: Net, images: np.ndarray, eps: np.ndarray) -> float:
    p = {k: v.data for k, v in net.params.params.items()}

    def dense(name: str, h: np.ndarray) -> np.ndarray:
        return h @ p[f"{name}.weight"] + p[f"{name}.bias"]

    # The example's sd floors, e.g. sigma = 0.001 + exp(.), by the blob they shift, from the YAML
    # (the net folds them into the Exponential neurons).
    entries = {entry["name"]: entry for entry in vae_layer_entries()}
    floors = {entry["bottoms"][0]: entry for entry in entries.values() if entry["type"] == "Power"}

    caps = {layer.config.name: layer.config.neuron.cap for layer in net.layers
            if getattr(layer.config, "neuron", None) is not None
            and hasattr(layer.config.neuron, "cap")}

    def sd(name: str, pre: np.ndarray) -> np.ndarray:
        floor = floors.get(entries[name]["tops"][0])
        value = np.exp(np.minimum(pre, caps[name]))  # the Exponential neuron's cap
        if floor is None:
            return value
        return (floor.get("scale", 1) * value + floor.get("shift", 0)) ** floor.get("power", 1)

    x = images.reshape(len(images), -1)
    h = np.maximum(dense("enc2", np.maximum(dense("enc1", x), 0)), 0)
    z_mu, z_sigma = dense("z_mu", h), sd("z_sigma", dense("z_sigma", h))
    z = z_mu + z_sigma * eps
    g = np.maximum(dense("dec2", np.maximum(dense("dec1", z), 0)), 0)
    x_mu, x_sigma = dense("x_mu", g), sd("x_sigma", dense("x_sigma", g))
    n = len(x)
    recon = -norm.logpdf(x, loc=x_mu, scale=x_sigma).sum() / n
    kl = (-np.log(z_sigma) + 0.5 * (z_mu**2 + z_sigma**2) - 0.5).sum() / n
    return float(recon + kl)


def test_the_small_vae_has_the_poster_layers(small_vae) -> None:
    net = small_vae()
    assert [layer.config.type_name for layer in net.layers].count("InnerProduct") == 8
    shapes = {k: p.shape for k, p in net.params.params.items()}
    assert shapes["enc1.weight"] == (25, 16) and shapes["z_mu.weight"] == (16, 8)
    assert shapes["x_sigma.weight"] == (16, 25)
    np.testing.assert_array_equal(net.params.params["z_sigma.bias"].data, -1.0)
    np.testing.assert_array_equal(net.params.params["x_sigma.weight"].data, 0.0)


def test_the_loss_is_the_negative_elbo(small_vae) -> None:
    images = np.random.default_rng(5).normal(size=(10, 1, 5, 5))
    net = small_vae(images)
    # Move the sd heads off their constant start so every term is exercised.
    for key in ("z_sigma.weight", "x_sigma.weight"):
        net.params.params[key].data[...] = np.random.default_rng(6).normal(
            scale=0.2, size=net.params.params[key].shape)
    net.forward()
    expected = numpy_negative_elbo(net, images, net.fetch("eps"))
    assert set(net.loss_by_layer()) == {"recon", "kl"}
    assert abs(net.loss() - expected) <= 1e-11 * abs(expected)


def test_fresh_noise_each_forward_unless_restored(small_vae) -> None:
    net = small_vae()
    objective = frozen_objective(net)
    first, again = objective(), objective()
    assert first == again
    net.forward()
    assert net.loss() != first


def test_elbo_gradient_matches_finite_differences_for_every_parameter(small_vae) -> None:
    net = small_vae()
    rng = np.random.default_rng(11)
    for key in ("z_sigma.weight", "x_sigma.weight"):
        net.params.params[key].data[...] = rng.normal(scale=0.2, size=net.params.params[key].shape)
    objective = frozen_objective(net)
    objective()
    net.backward()
    assert net.params.grad.shape == (net.n_params,)
    checked = 0
    for key, param in net.params.params.items():
        analytic = param.grad.copy()
        assert np.abs(analytic).max() > 0, f"no gradient reaches {key}"
        indices = sample_indices(param.shape, 8, rng)
        numeric = central_difference(objective, param.data, indices)
        assert_gradient_close(np.array([analytic[i] for i in indices]), numeric,
                              f"d(-ELBO)/d{key}", rtol=1e-6, atol=1e-8)
        checked += len(indices)
    assert len(net.params.params) == 16 and checked >= 100
