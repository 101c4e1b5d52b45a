"""experiments/capacity.py: its hand-written decoder gradient and its PCA bound."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "capacity.py"
spec = importlib.util.spec_from_file_location("capacity", SCRIPT)
capacity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(capacity)


def random_decoder(rng: np.random.Generator, sizes=(3, 6, 5, 7)) -> dict[str, np.ndarray]:
    params = {}
    for layer, n_in, n_out in zip(capacity.DECODER, sizes[:-1], sizes[1:], strict=True):
        params[f"{layer}.weight"] = rng.standard_normal((n_in, n_out))
        params[f"{layer}.bias"] = rng.standard_normal(n_out) * 0.5
    return params


def test_latent_gradient_matches_central_differences() -> None:
    rng = np.random.default_rng(0)
    params = random_decoder(rng)
    x, z = rng.standard_normal((4, 7)), rng.standard_normal((4, 3))
    _, grad = capacity.latent_gradient(params, x, z)
    numeric = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        shifted = [z.copy(), z.copy()]
        shifted[0][index] += 1e-6
        shifted[1][index] -= 1e-6
        plus, minus = (capacity.latent_gradient(params, x, s)[0] for s in shifted)
        numeric[index] = (plus - minus) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_fitting_latents_lowers_the_error() -> None:
    rng = np.random.default_rng(1)
    params = random_decoder(rng)
    z_true = rng.standard_normal((5, 3))
    x = capacity.decode(params, z_true)[0]
    z0 = z_true + 0.3 * rng.standard_normal(z_true.shape)
    before = capacity.latent_gradient(params, x, z0)[0]
    after = capacity.latent_gradient(params, x, capacity.fit_latents(params, x, z0, 300))[0]
    assert after < 0.05 * before


def test_pca_projection_wins_exactly_when_the_data_lie_in_its_subspace() -> None:
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.standard_normal((20, 3)))[0]
    train = rng.standard_normal((200, 3)) @ basis.T + 1.0
    x = rng.standard_normal((10, 3)) @ basis.T + 1.0
    baseline_mse = np.full(10, 1e-6)
    wins = capacity.pca_wins(train, x, baseline_mse, ranks=(2, 3))
    assert wins[3] == 1.0 and wins[2] < 1.0
