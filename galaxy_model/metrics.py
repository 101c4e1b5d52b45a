"""The poster's two held-out criteria, and the held-out ELBO.

Everything is per image over its m = C*H*W pixels, flattened; arrays may be (N, C, H, W),
(N, H, W) or (N, m) as long as every image has the same m pixels in the same order. The
comparison is against x̂, the per-image Gaussian fit of galaxy_model.baseline.
"""

from __future__ import annotations

import math

import numpy as np

from mochapy.errors import DataError

PUBLISHED = {"mse_win_fraction": 0.971, "likelihood_win_fraction": 0.972}
PUBLISHED_HELDOUT_IMAGES = 1000
_LOG_2PI = math.log(2.0 * math.pi)


def _per_image(name: str, array: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """(N, m) float64 view of array, checked to be finite and shaped like `like` if given."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim < 1 or array.shape[0] == 0:
        raise DataError(f"{name}: expected a batch of images (N, ...), got shape {array.shape}")
    flat = array.reshape(array.shape[0], -1)
    if like is not None and flat.shape != like.shape:
        raise DataError(
            f"{name}: {flat.shape[0]} images of {flat.shape[1]} pixels do not match x's "
            f"{like.shape[0]} images of {like.shape[1]} pixels"
        )
    if not np.all(np.isfinite(flat)):
        raise DataError(f"{name}: contains NaN or Inf")
    return flat


def per_image_mse(x: np.ndarray, prediction: np.ndarray, name: str = "prediction") -> np.ndarray:
    """Mean squared error over each image's pixels, (N,); `name` labels prediction in errors."""
    x = _per_image("x", x)
    prediction = _per_image(name, prediction, like=x)
    return np.mean((x - prediction) ** 2, axis=1)


def mse_win(x: np.ndarray, recon_mu: np.ndarray, baseline_model: np.ndarray) -> np.ndarray:
    """(N,) bool: f_mu(g_mu(x)) has strictly lower pixel MSE than the Gaussian fit x̂."""
    return per_image_mse(x, recon_mu, "recon_mu") < per_image_mse(
        x, baseline_model, "baseline_model"
    )


def best_sigma_gaussian_loglik(x: np.ndarray, baseline_model: np.ndarray) -> np.ndarray:
    """max over σ > 0 of log N(x; x̂, σ²I), per image, (N,).

    With S = Σ (x_i - x̂_i)², ℓ(σ²) = -m/2 log(2πσ²) - S/(2σ²) and dℓ/dσ² = (S/σ² - m)/(2σ²),
    so ℓ rises up to σ̂² = S/m (the mean squared residual) and falls after it: the maximum is
    ℓ(σ̂²) = -m/2 (log(2π σ̂²) + 1). Since the maximum is attained, "x is more probable under
    the model than under N(x̂, σ²I) for every σ > 0" is the same as beating this value. A fit
    with zero residual gives +inf (no model beats it).
    """
    x = _per_image("x", x)
    baseline_model = _per_image("baseline_model", baseline_model, like=x)
    m = x.shape[1]
    best_variance = np.mean((x - baseline_model) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return -0.5 * m * (_LOG_2PI + np.log(best_variance) + 1.0)


def diag_gaussian_loglik(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Σ_i log N(x_i; mu_i, sd_i²) per image, (N,); sd is a standard deviation (> 0)."""
    x = _per_image("x", x)
    mu = _per_image("mu", mu, like=x)
    sd = _per_image("sd", sd, like=x)
    if np.any(sd <= 0):
        raise DataError("sd: standard deviations must be positive")
    z = (x - mu) / sd
    return -0.5 * x.shape[1] * _LOG_2PI - np.log(sd).sum(axis=1) - 0.5 * np.sum(z * z, axis=1)


def likelihood_win(
    x: np.ndarray, recon_mu: np.ndarray, recon_sd: np.ndarray, baseline_model: np.ndarray
) -> np.ndarray:
    """(N,) bool: x is more probable under N(f_mu, diag f_sigma²) than under N(x̂, σ²I), all σ."""
    return diag_gaussian_loglik(x, recon_mu, recon_sd) > best_sigma_gaussian_loglik(
        x, baseline_model
    )


def weighted_per_image_mse(x: np.ndarray, prediction: np.ndarray, weights: np.ndarray,
                           name: str = "prediction") -> np.ndarray:
    """Σ w (x - prediction)² / (number of pixels with w > 0) per image, (N,): with w = ivar,
    the mean squared residual in units of each pixel's noise variance (chi² per used pixel)."""
    x = _per_image("x", x)
    prediction = _per_image(name, prediction, like=x)
    weights = _per_image("weights", weights, like=x)
    used = np.maximum((weights > 0).sum(axis=1), 1)
    return np.sum(weights * (x - prediction) ** 2, axis=1) / used


def noise_gaussian_loglik(x: np.ndarray, mu: np.ndarray, sd: np.ndarray,
                          weights: np.ndarray) -> np.ndarray:
    """Σ over pixels with weight > 0 of log N(x; mu, sd²), per image, (N,)."""
    x = _per_image("x", x)
    mu, sd = _per_image("mu", mu, like=x), _per_image("sd", sd, like=x)
    used = _per_image("weights", weights, like=x) > 0
    if np.any(sd[used] <= 0):
        raise DataError("sd: standard deviations must be positive")
    z = (x - mu) / np.where(used, sd, 1.0)
    terms = -0.5 * _LOG_2PI - np.log(np.where(used, sd, 1.0)) - 0.5 * z * z
    return np.sum(np.where(used, terms, 0.0), axis=1)


def best_scale_noise_loglik(x: np.ndarray, baseline_model: np.ndarray,
                            weights: np.ndarray) -> np.ndarray:
    """max over s > 0 of Σ_used log N(x; x̂, s²/w), per image, (N,): the baseline with the
    known noise map (w = ivar) up to one free scale, the weighted analogue of the best σ.

    With m used pixels and S = Σ w r², the maximum is at ŝ² = S/m:
    -m/2 (log 2π + log ŝ² + 1) + ½ Σ_used log w.
    """
    x = _per_image("x", x)
    baseline_model = _per_image("baseline_model", baseline_model, like=x)
    weights = _per_image("weights", weights, like=x)
    used = weights > 0
    m = used.sum(axis=1)
    best_scale = np.sum(weights * (x - baseline_model) ** 2, axis=1) / np.maximum(m, 1)
    log_weights = np.sum(np.log(np.where(used, weights, 1.0)), axis=1)
    with np.errstate(divide="ignore"):
        return -0.5 * m * (_LOG_2PI + np.log(best_scale) + 1.0) + 0.5 * log_weights


def kl_diag_gaussian_to_standard(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """KL(N(mu, diag sd²) || N(0, I)) = ½ Σ (mu² + sd² - 2 log sd - 1) per row, (N,)."""
    mu = _per_image("mu", mu)
    sd = _per_image("sd", sd, like=mu)
    if np.any(sd <= 0):
        raise DataError("sd: standard deviations must be positive")
    return 0.5 * np.sum(mu * mu + sd * sd - 2.0 * np.log(sd) - 1.0, axis=1)


def elbo_per_image(recon_loglik: np.ndarray, kl: np.ndarray) -> np.ndarray:
    """ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) in nats, per image, (N,)."""
    recon_loglik = np.asarray(recon_loglik, dtype=np.float64)
    kl = np.asarray(kl, dtype=np.float64)
    if recon_loglik.shape != kl.shape or recon_loglik.ndim != 1:
        raise DataError(
            f"recon_loglik {recon_loglik.shape} and kl {kl.shape}: expected two (N,) arrays"
        )
    return recon_loglik - kl


def bits_per_dim(elbo_nats: np.ndarray, m: int) -> float:
    """-mean(ELBO) / (m ln 2): the bound on the negative log-likelihood in bits per pixel.

    The pixels are continuous values in the data's normalised units, so this is a density, not
    a probability: it can be negative, and it changes with the normalisation (rescaling pixels
    by s shifts it by log2 s). Compare it only between models of the same normalised data.
    """
    elbo_nats = np.asarray(elbo_nats, dtype=np.float64)
    if elbo_nats.size == 0 or m <= 0:
        raise DataError(f"bits_per_dim: need ELBOs and m > 0 pixels, got {elbo_nats.size}, {m}")
    return float(-np.mean(elbo_nats) / (m * math.log(2.0)))


def summarise(
    *,
    mse_win: np.ndarray,
    likelihood_win: np.ndarray,
    elbo: np.ndarray,
    n_pixels: int,
    mse_model: np.ndarray,
    mse_baseline: np.ndarray,
) -> dict:
    """The evaluate JSON from per-image results (all (N,)), with the poster's published values.

    mse_win, likelihood_win: from mse_win() and likelihood_win(); elbo: per-image ELBO in nats
    (elbo_per_image()); n_pixels: m = C*H*W; mse_model, mse_baseline: per_image_mse() of
    f_mu(g_mu(x)) and of the Gaussian fit.
    """
    columns = {
        "mse_win": np.asarray(mse_win, dtype=bool),
        "likelihood_win": np.asarray(likelihood_win, dtype=bool),
        "elbo": np.asarray(elbo, dtype=np.float64),
        "mse_model": np.asarray(mse_model, dtype=np.float64),
        "mse_baseline": np.asarray(mse_baseline, dtype=np.float64),
    }
    n_images = len(columns["mse_win"])
    for name, column in columns.items():
        if column.shape != (n_images,) or n_images == 0:
            raise DataError(f"{name}: expected shape ({n_images},) with N > 0, got {column.shape}")
    return {
        "n_images": int(n_images),
        "pixels_per_image": int(n_pixels),
        "mse_win_fraction": float(np.mean(columns["mse_win"])),
        "likelihood_win_fraction": float(np.mean(columns["likelihood_win"])),
        "elbo_nats_per_image": float(np.mean(columns["elbo"])),
        "bits_per_dim": bits_per_dim(columns["elbo"], n_pixels),
        "median_mse_model": float(np.median(columns["mse_model"])),
        "median_mse_baseline": float(np.median(columns["mse_baseline"])),
        "published": dict(PUBLISHED),
    }


def markdown_table(summary: dict, label: str) -> str:
    """A Markdown table of a summarise() result beside the poster's numbers."""
    published = summary.get("published", PUBLISHED)

    def percent(value: float) -> str:
        return f"{100.0 * value:.1f}%"

    rows = [
        ("held-out images", str(summary["n_images"]), str(PUBLISHED_HELDOUT_IMAGES)),
        (
            "lower MSE than the Gaussian fit",
            percent(summary["mse_win_fraction"]),
            percent(published["mse_win_fraction"]),
        ),
        (
            "more probable than N(x̂, σ²I) for every σ > 0",
            percent(summary["likelihood_win_fraction"]),
            percent(published["likelihood_win_fraction"]),
        ),
        ("held-out ELBO (nats/image)", f"{summary['elbo_nats_per_image']:.1f}", "—"),
        ("bits/dim (normalised pixels)", f"{summary['bits_per_dim']:.3f}", "—"),
        ("median MSE, f_mu(g_mu(x))", f"{summary['median_mse_model']:.3g}", "—"),
        ("median MSE, Gaussian fit", f"{summary['median_mse_baseline']:.3g}", "—"),
    ]
    lines = [f"| | {label} | poster |", "|---|---:|---:|"]
    lines += [f"| {name} | {ours} | {poster} |" for name, ours, poster in rows]
    return "\n".join(lines) + "\n"


def comparisons_table(summary: dict) -> str:
    """A Markdown table of summary["comparisons"]: the two win fractions against each baseline,
    unweighted (the poster's form) and ivar-weighted, for all bands and each band."""
    lines = ["| baseline | weighting | band | images | MSE wins | likelihood wins | "
             "median MSE: VAE / baseline |", "|---|---|---|---:|---:|---:|---:|"]
    for baseline, weightings in summary.get("comparisons", {}).items():
        for weighting, bands in weightings.items():
            for band, row in bands.items():
                lines.append(
                    f"| {baseline} | {weighting} | {band} | {row['n_images']} | "
                    f"{100 * row['mse_win_fraction']:.1f}% | "
                    f"{100 * row['likelihood_win_fraction']:.1f}% | "
                    f"{row['median_mse_model']:.3g} / {row['median_mse_baseline']:.3g} |"
                )
    return "\n".join(lines) + "\n"
