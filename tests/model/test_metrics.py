"""The poster's criteria and the ELBO, each against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from galaxy_model import metrics
from mochapy.errors import DataError


def random_batch(seed: int, shape=(50, 1, 6, 7)):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    recon_mu = x + rng.normal(scale=rng.uniform(0.1, 1.0, size=(shape[0], 1, 1, 1)), size=shape)
    recon_sd = np.exp(rng.normal(scale=0.5, size=shape))
    baseline_model = x + rng.normal(
        scale=rng.uniform(0.1, 1.0, size=(shape[0], 1, 1, 1)), size=shape
    )
    return x, recon_mu, recon_sd, baseline_model


def test_best_sigma_is_the_maximum_over_a_fine_sigma_grid():
    x, _, _, baseline_model = random_batch(0, shape=(4, 2, 3, 4))
    closed_form = metrics.best_sigma_gaussian_loglik(x, baseline_model)
    residual = (x - baseline_model).reshape(4, -1)
    for i in range(4):
        rms = math.sqrt(np.mean(residual[i] ** 2))
        sigmas = np.geomspace(rms / 10, rms * 10, 200_001)
        grid = stats.norm.logpdf(residual[i][:, None], scale=sigmas[None, :]).sum(axis=0)
        assert grid.max() <= closed_form[i] + 1e-9 * abs(closed_form[i])  # no σ beats it
        assert closed_form[i] - grid.max() <= 1e-6  # and the grid gets arbitrarily close


def test_diag_gaussian_loglik_matches_scipy():
    x, mu, sd, _ = random_batch(1)
    expected = stats.norm.logpdf(x, loc=mu, scale=sd).reshape(len(x), -1).sum(axis=1)
    np.testing.assert_allclose(metrics.diag_gaussian_loglik(x, mu, sd), expected, rtol=1e-12)


def test_win_fractions_match_a_direct_computation():
    x, recon_mu, recon_sd, baseline_model = random_batch(2, shape=(400, 3, 5, 5))
    axes = (1, 2, 3)
    expected_mse = np.mean((x - recon_mu) ** 2, axis=axes) < np.mean(
        (x - baseline_model) ** 2, axis=axes
    )
    model_loglik = stats.norm.logpdf(x, recon_mu, recon_sd).sum(axis=axes)
    m = x[0].size
    best_variance = np.mean((x - baseline_model) ** 2, axis=axes)
    baseline_loglik = stats.norm.logpdf(
        x, baseline_model, np.sqrt(best_variance)[:, None, None, None]
    ).sum(axis=axes)
    np.testing.assert_allclose(
        metrics.best_sigma_gaussian_loglik(x, baseline_model), baseline_loglik, rtol=1e-12
    )
    mse_wins = metrics.mse_win(x, recon_mu, baseline_model)
    likelihood_wins = metrics.likelihood_win(x, recon_mu, recon_sd, baseline_model)
    np.testing.assert_array_equal(mse_wins, expected_mse)
    np.testing.assert_array_equal(likelihood_wins, model_loglik > baseline_loglik)
    assert 0.05 < mse_wins.mean() < 0.95 and 0.05 < likelihood_wins.mean() < 0.95
    assert m == 75
    # A tie is not a win; flattened (N, m) inputs give the same answer as images.
    assert not metrics.mse_win(x, baseline_model, baseline_model).any()
    np.testing.assert_array_equal(
        metrics.mse_win(x.reshape(400, -1), recon_mu, baseline_model.reshape(400, 5, 15)), mse_wins
    )


def test_kl_matches_monte_carlo_and_quadrature():
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(3, 4))
    sd = np.exp(rng.normal(scale=0.4, size=(3, 4)))
    kl = metrics.kl_diag_gaussian_to_standard(mu, sd)

    samples = mu[:, None, :] + sd[:, None, :] * rng.standard_normal((3, 200_000, 4))
    log_ratio = (
        stats.norm.logpdf(samples, mu[:, None, :], sd[:, None, :]) - stats.norm.logpdf(samples)
    ).sum(axis=2)
    standard_error = log_ratio.std(axis=1) / math.sqrt(log_ratio.shape[1])
    assert np.all(np.abs(log_ratio.mean(axis=1) - kl) < 5 * standard_error)

    def kl_1d(m: float, s: float) -> float:
        q = stats.norm(m, s)
        return integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - stats.norm.logpdf(z)), -40, 40)[0]

    quadrature = [sum(kl_1d(m, s) for m, s in zip(mu[i], sd[i], strict=True)) for i in range(3)]
    np.testing.assert_allclose(kl, quadrature, rtol=1e-8)
    np.testing.assert_allclose(
        metrics.kl_diag_gaussian_to_standard(np.zeros((2, 3)), np.ones((2, 3))), 0
    )


def test_elbo_bits_per_dim_and_summary():
    elbo = metrics.elbo_per_image(np.array([-10.0, -20.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(elbo, [-11.0, -22.0])
    assert metrics.bits_per_dim(elbo, 4) == pytest.approx(16.5 / (4 * math.log(2)))
    assert metrics.bits_per_dim(np.array([100.0]), 10) < 0  # densities can exceed 1

    summary = metrics.summarise(
        mse_win=np.array([True, True, False, True]),
        likelihood_win=np.array([True, False, False, True]),
        elbo=np.array([-1.0, -2.0, -3.0, -6.0]),
        n_pixels=4761,
        mse_model=np.array([1.0, 2.0, 3.0, 10.0]),
        mse_baseline=np.array([2.0, 3.0, 1.0, 20.0]),
    )
    assert summary["n_images"] == 4
    assert summary["mse_win_fraction"] == 0.75 and summary["likelihood_win_fraction"] == 0.5
    assert summary["elbo_nats_per_image"] == -3.0
    assert summary["bits_per_dim"] == pytest.approx(3.0 / (4761 * math.log(2)))
    assert summary["median_mse_model"] == 2.5 and summary["median_mse_baseline"] == 2.5
    assert summary["published"] == {"mse_win_fraction": 0.971, "likelihood_win_fraction": 0.972}
    table = metrics.markdown_table(summary, "galaxy_vae on builtin:heldout")
    assert "| | galaxy_vae on builtin:heldout | poster |" in table
    assert "| 75.0% | 97.1% |" in table and "| 50.0% | 97.2% |" in table


def test_bad_inputs_name_the_argument():
    x, mu, sd, baseline_model = random_batch(4)
    with pytest.raises(DataError, match="baseline_model"):
        metrics.mse_win(x, mu, baseline_model[:, :, :5])
    with pytest.raises(DataError, match="sd"):
        metrics.diag_gaussian_loglik(x, mu, -sd)
    with pytest.raises(DataError, match="recon_loglik"):
        metrics.elbo_per_image(np.zeros(3), np.zeros(4))
    with pytest.raises(DataError, match="elbo"):
        metrics.summarise(
            mse_win=np.ones(3, bool),
            likelihood_win=np.ones(3, bool),
            elbo=np.zeros(2),
            n_pixels=4,
            mse_model=np.zeros(3),
            mse_baseline=np.zeros(3),
        )
