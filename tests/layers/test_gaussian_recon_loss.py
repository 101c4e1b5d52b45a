"""GaussianReconLoss: the negative normal log density (scipy) with its beta and mean_sd variants;
backward against finite differences in float64 and the closed forms, on every backend. The
survey options (ivar, mask) are in tests/survey/test_recon_loss.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config


@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_gaussian_recon_loss_is_the_negative_normal_log_density(weight, rng, backend) -> None:
    n = 4
    mu = rng.normal(size=(n, 25))
    sigma = rng.uniform(0.3, 2.0, size=(n, 25))
    x = rng.normal(size=(n, 1, 5, 5))  # images, read flat
    config = make_config("GaussianReconLoss", name="recon",
                         bottoms=["mu", "sigma", "x"], weight=weight)
    harness = LayerHarness(config, {"mu": mu, "sigma": sigma, "x": x},
                           grad_bottoms=("mu", "sigma"), backend=backend)
    expected = -weight / n * norm.logpdf(x.reshape(n, -1), loc=mu, scale=sigma).sum()
    assert harness.objective() == pytest.approx(expected, rel=1e-12)
    residual = mu - x.reshape(n, -1)
    grads = harness.gradients()
    np.testing.assert_allclose(grads["mu"], weight / n * residual / sigma**2, rtol=1e-12)
    np.testing.assert_allclose(grads["sigma"], weight / n * (1 / sigma - residual**2 / sigma**3),
                               rtol=1e-12, atol=1e-15)
    harness.check_gradients()


def test_gaussian_recon_loss_sends_no_gradient_into_x(rng, backend) -> None:
    n = 3
    bottoms = {"mu": rng.normal(size=(n, 6)), "sigma": rng.uniform(0.5, 1.5, size=(n, 6)),
               "x": rng.normal(size=(n, 6))}
    config = make_config("GaussianReconLoss", name="recon", bottoms=["mu", "sigma", "x"])
    harness = LayerHarness(config, bottoms, backend=backend)
    sentinel = 7.25
    harness.bottoms["x"].diff[...] = sentinel
    harness.layer.forward()
    harness.layer.backward()
    np.testing.assert_array_equal(harness.host(harness.bottoms["x"].diff), sentinel)
    assert np.abs(harness.host(harness.bottoms["mu"].diff)).min() > 0


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_gaussian_recon_loss_beta_weights_gradients_by_sigma_to_two_beta(
    beta, rng, backend
) -> None:
    """beta-NLL: the loss is unchanged; each gradient is the beta = 0 one times sigma^(2 beta)."""
    n = 3
    bottoms = {"mu": rng.normal(size=(n, 6)), "sigma": rng.uniform(0.3, 2.0, size=(n, 6)),
               "x": rng.normal(size=(n, 6))}

    def run(beta_value: float):
        config = make_config("GaussianReconLoss", name="recon",
                             bottoms=["mu", "sigma", "x"], beta=beta_value)
        harness = LayerHarness(config, bottoms, grad_bottoms=("mu", "sigma"), backend=backend)
        return harness.objective(), harness.gradients()

    plain_loss, plain = run(0.0)
    beta_loss, weighted = run(beta)
    assert beta_loss == pytest.approx(plain_loss, rel=1e-12)  # summed by a different loop
    for name in ("mu", "sigma"):
        np.testing.assert_allclose(weighted[name], plain[name] * bottoms["sigma"] ** (2 * beta),
                                   rtol=1e-13)


def test_gaussian_recon_loss_mean_sd_fixes_the_means_gradient_only(rng, backend) -> None:
    """mean_sd: dmu is squared error's at that sd, dsigma and the loss are the likelihood's."""
    n, weight, mean_sd = 3, 0.4, 0.25
    bottoms = {"mu": rng.normal(size=(n, 6)), "sigma": rng.uniform(0.3, 2.0, size=(n, 6)),
               "x": rng.normal(size=(n, 6))}

    def run(**options):
        config = make_config("GaussianReconLoss", name="recon",
                             bottoms=["mu", "sigma", "x"], weight=weight, **options)
        harness = LayerHarness(config, bottoms, grad_bottoms=("mu", "sigma"), backend=backend)
        return harness.objective(), harness.gradients()

    plain_loss, plain = run()
    loss, grads = run(mean_sd=mean_sd)
    assert loss == pytest.approx(plain_loss, rel=1e-12)
    residual = bottoms["mu"] - bottoms["x"]
    np.testing.assert_allclose(grads["mu"], weight / n * residual / mean_sd**2, rtol=1e-13)
    np.testing.assert_allclose(grads["sigma"], plain["sigma"], rtol=1e-13)
    with pytest.raises(ConfigError, match="mean_sd.*excludes beta"):
        make_config("GaussianReconLoss", name="recon", bottoms=["mu", "sigma", "x"],
                    beta=0.5, mean_sd=0.1)


def test_gaussian_recon_loss_rejects_mismatched_shapes() -> None:
    config = make_config("GaussianReconLoss", name="loss", bottoms=["a", "b", "c"])
    with pytest.raises(ConfigError, match="'loss'.*'b'"):
        LayerHarness(config, {"a": np.ones((2, 3)), "b": np.ones((2, 4)), "c": np.ones((2, 3))})
