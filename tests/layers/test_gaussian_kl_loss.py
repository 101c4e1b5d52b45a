"""GaussianKLLoss: KL(N(mu, sigma^2) || N(0, 1)) against the closed form and a Monte Carlo
estimate; backward against finite differences in float64, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config


def kl_closed_form(mu: np.ndarray, sigma: np.ndarray) -> float:
    """KL(N(mu, sigma^2) || N(0, 1)) summed: log(1/sigma) + (sigma^2 + mu^2)/2 - 1/2."""
    return float(np.sum(-np.log(sigma) + (sigma**2 + mu**2) / 2 - 0.5))


def test_gaussian_kl_loss_matches_the_closed_form_and_gradients(rng, backend) -> None:
    n, weight = 5, 0.7
    mu = rng.normal(size=(n, 8))
    sigma = rng.uniform(0.2, 3.0, size=(n, 8))
    config = make_config("GaussianKLLoss", name="kl", bottoms=["mu", "sigma"],
                         weight=weight)
    harness = LayerHarness(config, {"mu": mu, "sigma": sigma}, backend=backend)
    assert harness.objective() == pytest.approx(weight / n * kl_closed_form(mu, sigma), rel=1e-12)
    grads = harness.gradients()
    np.testing.assert_allclose(grads["mu"], weight / n * mu, rtol=1e-12)
    np.testing.assert_allclose(grads["sigma"], weight / n * (sigma - 1 / sigma), rtol=1e-12)
    harness.check_gradients()


def test_gaussian_kl_loss_matches_a_monte_carlo_estimate(rng, backend) -> None:
    """E_q[log q(z) - log p(z)] from 200,000 draws per entry; tolerance 5 standard errors."""
    n = 2
    mu = np.array([[0.0, 1.5, -0.7], [0.3, -2.0, 0.0]])
    sigma = np.array([[1.0, 0.5, 2.0], [0.1, 1.3, 0.8]])
    config = make_config("GaussianKLLoss", name="kl", bottoms=["mu", "sigma"])
    loss = LayerHarness(config, {"mu": mu, "sigma": sigma}, backend=backend).objective()

    draws = 200_000
    z = mu + sigma * rng.standard_normal(size=(draws, *mu.shape))
    log_ratio = norm.logpdf(z, loc=mu, scale=sigma) - norm.logpdf(z)
    per_draw = log_ratio.reshape(draws, -1).sum(axis=1) / n
    estimate = per_draw.mean()
    standard_error = per_draw.std(ddof=1) / math.sqrt(draws)
    assert abs(loss - estimate) < 5 * standard_error, (loss, estimate, standard_error)
    assert standard_error < 0.01 * loss


def test_gaussian_kl_loss_rejects_mismatched_shapes() -> None:
    config = make_config("GaussianKLLoss", name="loss", bottoms=["a", "b"])
    with pytest.raises(ConfigError, match="'loss'.*'b'"):
        LayerHarness(config, {"a": np.ones((2, 3)), "b": np.ones((2, 4))})
