"""The poster's comparison, recomputed: the VAE against the scaled bivariate Gaussian fit.

For every image x: the VAE's point reconstruction f_mu(g_mu(x)) against the baseline x_hat on pixel
MSE (poster: 97.1% wins), and x's probability under N(f_mu(g_mu(x)), f_sigma(g_mu(x))^2) against
N(x_hat, sigma^2 I) at the best sigma (poster: 97.2%); plus the held-out ELBO. These top-level
numbers are the poster's: unweighted, every pixel, against the Gaussian.

`summary["comparisons"][baseline][weighting][band]` holds the same two fractions (and median
MSEs) against each requested baseline ("gaussian", "sersic"), for all bands together ("all") and,
for colour data, for each band alone (named by the dataset's band_names):
    unweighted     the poster's form: every pixel, fit and MSE unweighted, baseline N(x̂, σ²I)
    ivar_weighted  when the data carry ivar or mask: masked and ivar-0 pixels left out, the fit
                   and the MSE weighted by ivar (mse = Σ ivar r² / used pixels: chi² per pixel),
                   baseline N(x̂, s²/ivar) at the best s
A net trained with `variance: model_plus_noise` predicts N(f_mu, f_sigma² + 1/ivar); its
likelihoods (and ELBO) use that variance wherever ivar > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from galaxy_model import metrics
from galaxy_model.baseline import fit_gaussian2d, pixel_weights
from galaxy_model.dataset import GalaxyDataset
from galaxy_model.model import GalaxyVAE
from galaxy_model.sersic import fit_sersic
from mochapy.errors import DataError

BASELINES = ("gaussian", "sersic")
SERSIC_PSF_SIGMA = 1.0  # pixels: the Sérsic baseline's Gaussian PSF on 69 x 69 stamps
COMPARISON_FIELDS = ("mse_model", "mse_baseline", "mse_win", "likelihood_win")


@dataclass
class Evaluation:
    """Per-image results and the JSON summary of one model on one dataset."""

    summary: dict
    recon_mean: np.ndarray
    recon_sd: np.ndarray
    baseline_model: np.ndarray
    mse_model: np.ndarray
    mse_baseline: np.ndarray
    mse_win: np.ndarray
    likelihood_win: np.ndarray
    elbo: np.ndarray
    latent_mean: np.ndarray
    latent_sd: np.ndarray
    # per-image records of summary["comparisons"], keyed "baseline/weighting/band/field"
    comparison_records: dict[str, np.ndarray] = field(default_factory=dict)


def estimate_elbo(
    model: GalaxyVAE, x: np.ndarray, z_mu: np.ndarray, z_sd: np.ndarray, samples: int, seed: int,
    first_row: int = 0, noise_variance: np.ndarray | None = None,
) -> np.ndarray:
    """Per-image ELBO in nats: the mean over `samples` draws z ~ q(z|x) of log p(x|z), minus KL.

    Image i's draws come from its own generator, seeded by (seed, first_row + i): an image's
    ELBO does not depend on which other images share its call, so a data set evaluated shard by
    shard (first_row: the shard's first global row) gives the one-process answer exactly."""
    noise = np.stack([
        np.random.default_rng([seed, first_row + i]).standard_normal((samples, z_mu.shape[1]))
        for i in range(len(x))
    ], axis=1).astype(np.float32)  # (samples, N, latent)
    recon = np.zeros(len(x))
    for draw in noise:
        z = z_mu + z_sd * draw
        decoded = model.decode(z)
        sd = predictive_sd(decoded.sd, noise_variance)
        recon += metrics.diag_gaussian_loglik(x, decoded.mean, sd)
    kl = metrics.kl_diag_gaussian_to_standard(z_mu, z_sd)
    return metrics.elbo_per_image(recon / samples, kl)


def baseline_misfit_groups(mse_baseline: np.ndarray, groups: int = 4) -> list[np.ndarray]:
    """Image indices in `groups` equal parts by the Gaussian fit's MSE, best-fitted first."""
    return np.array_split(np.argsort(mse_baseline, kind="stable"), groups)


def wins_by_baseline_misfit(
    mse_baseline: np.ndarray, mse_win: np.ndarray, likelihood_win: np.ndarray, groups: int = 4
) -> list[dict]:
    """Win fractions per quartile of the Gaussian fit's MSE: where the VAE wins and loses.

    The first quartile holds the galaxies a Gaussian already fits best (near-Gaussian shapes, or
    faint ones whose residual is mostly noise); the last, those it misfits most.
    """
    rows = []
    for index, part in enumerate(baseline_misfit_groups(mse_baseline, groups)):
        if not len(part):
            continue  # fewer images than quartiles: no row for an empty one
        rows.append({
            "quartile": index + 1,
            "n_images": int(len(part)),
            "baseline_mse_range": [float(mse_baseline[part].min()),
                                   float(mse_baseline[part].max())],
            "mse_win_fraction": float(np.mean(mse_win[part])),
            "likelihood_win_fraction": float(np.mean(likelihood_win[part])),
        })
    return rows


def check_baselines(baselines: tuple[str, ...]) -> None:
    """Refuse a baseline name that is not one of BASELINES (before any work starts)."""
    for name in baselines:
        if name not in BASELINES:
            raise DataError(f"baseline {name!r}: choose from {', '.join(BASELINES)}")


def fit_baseline(name: str, images: np.ndarray, ivar: np.ndarray | None = None,
                 mask: np.ndarray | None = None, psf_sigma: float = SERSIC_PSF_SIGMA) -> np.ndarray:
    """The fitted x̂ of baseline `name` for every image (each band fitted alone), shaped like
    `images`; weighted by ivar and skipping masked pixels where given."""
    if name == "gaussian":
        fitted = fit_gaussian2d(images, mask=mask, ivar=ivar).model
    elif name == "sersic":
        fitted = fit_sersic(images, ivar=ivar, mask=mask, psf_sigma=psf_sigma).model
    else:
        raise DataError(f"baseline {name!r}: choose from {', '.join(BASELINES)}")
    return np.asarray(fitted).reshape(images.shape)


def adds_noise_variance(model: GalaxyVAE) -> bool:
    """Whether the net's reconstruction loss is x ~ N(f_mu, f_sigma² + 1/ivar)."""
    return any(getattr(layer, "variance", "model") == "model_plus_noise"
               and model.roles["recon_mean"] in layer.bottoms for layer in model.run.config.layers)


def predictive_sd(sd: np.ndarray, noise_variance: np.ndarray | None) -> np.ndarray:
    """The model's sd, with the measured noise variance added where the net adds it."""
    return sd if noise_variance is None else np.sqrt(sd.astype(np.float64) ** 2 + noise_variance)


def band_names(dataset: GalaxyDataset) -> list[str]:
    """The dataset's band names (attribute band_names, e.g. "i,r,g"), else band1, band2, ..."""
    names = [n.strip() for n in str(dataset.attrs.get("band_names", "")).split(",") if n.strip()]
    return names if len(names) == dataset.bands else [f"band{i + 1}" for i in range(dataset.bands)]


def comparison_records(prefix: str, x: np.ndarray, mean: np.ndarray, sd: np.ndarray,
                       fitted: np.ndarray, weights: np.ndarray | None,
                       bands: list[str]) -> dict[str, np.ndarray]:
    """Per-image MSEs and the two wins against one fitted baseline, for all bands and each."""
    parts = [("all", slice(None))]
    if len(bands) > 1:
        parts += [(name, slice(index, index + 1)) for index, name in enumerate(bands)]
    records = {}
    for band, part in parts:
        xb, mb, sb, fb = (a[:, part] for a in (x, mean, sd, fitted))
        if weights is None:
            mse_model, mse_baseline = metrics.per_image_mse(xb, mb), metrics.per_image_mse(xb, fb)
            loglik_model = metrics.diag_gaussian_loglik(xb, mb, sb)
            loglik_baseline = metrics.best_sigma_gaussian_loglik(xb, fb)
        else:
            wb = weights[:, part]
            mse_model = metrics.weighted_per_image_mse(xb, mb, wb)
            mse_baseline = metrics.weighted_per_image_mse(xb, fb, wb)
            loglik_model = metrics.noise_gaussian_loglik(xb, mb, sb, wb)
            loglik_baseline = metrics.best_scale_noise_loglik(xb, fb, wb)
        values = (mse_model, mse_baseline, mse_model < mse_baseline,
                  loglik_model > loglik_baseline)
        records.update({f"{prefix}/{band}/{name}": value
                        for name, value in zip(COMPARISON_FIELDS, values, strict=True)})
    return records


def evaluate(
    model: GalaxyVAE,
    dataset: GalaxyDataset,
    elbo_samples: int = 4,
    seed: int = 0,
    label: str = "",
    first_row: int = 0,
    baselines: tuple[str, ...] = ("gaussian",),
    psf_sigma: float = SERSIC_PSF_SIGMA,
) -> Evaluation:
    """Fit the baselines to every image and compare them with the model; see the module docstring.

    first_row: the global index of the dataset's first image when it is one shard of a larger
    data set (it seeds the per-image ELBO draws). baselines: those in summary["comparisons"]
    (the top-level numbers are always the Gaussian's); psf_sigma: the Sérsic fit's PSF."""
    x = model.check_images(dataset.data, label or "data")
    check_baselines(baselines)
    weights = pixel_weights(x.shape, dataset.ivar, dataset.mask)
    noise_variance = None
    if adds_noise_variance(model) and dataset.ivar is not None:
        ivar = dataset.ivar.astype(np.float64)
        noise_variance = np.where(ivar > 0, 1.0 / np.where(ivar > 0, ivar, 1.0), 0.0)
    z_mu, z_sd = model.encode(x)
    recon = model.decode(z_mu)
    sd = predictive_sd(recon.sd, noise_variance)
    fits = {name: fit_baseline(name, x, psf_sigma=psf_sigma)
            for name in dict.fromkeys(("gaussian", *baselines))}
    baseline = fits["gaussian"]
    mse_model = metrics.per_image_mse(x, recon.mean)
    mse_baseline = metrics.per_image_mse(x, baseline)
    mse_win = metrics.mse_win(x, recon.mean, baseline)
    likelihood_win = metrics.likelihood_win(x, recon.mean, sd, baseline)
    elbo = estimate_elbo(model, x, z_mu, z_sd, elbo_samples, seed, first_row, noise_variance)
    records = {"mse_model": mse_model, "mse_baseline": mse_baseline, "mse_win": mse_win,
               "likelihood_win": likelihood_win, "elbo": elbo}
    bands = band_names(dataset)
    comparisons = {}
    for name in baselines:
        comparisons.update(comparison_records(f"{name}/unweighted", x, recon.mean, sd,
                                              fits[name], None, bands))
        if weights is not None:
            weighted_fit = fit_baseline(name, x, dataset.ivar, dataset.mask, psf_sigma)
            comparisons.update(comparison_records(f"{name}/ivar_weighted", x, recon.mean, sd,
                                                  weighted_fit, weights, bands))
    summary = summarise_records({**records, **comparisons}, int(np.prod(x.shape[1:])), label)
    return Evaluation(summary, recon.mean, recon.sd, baseline, latent_mean=z_mu, latent_sd=z_sd,
                      comparison_records=comparisons, **records)


RECORD_FIELDS = ("mse_model", "mse_baseline", "mse_win", "likelihood_win", "elbo")


def image_records(evaluation: Evaluation) -> dict[str, np.ndarray]:
    """The per-image results (all (N,)) that a summary is made of: what each shard of a
    shard-parallel evaluation sends back, to be concatenated in row order and summarised."""
    return {**{name: getattr(evaluation, name) for name in RECORD_FIELDS},
            **evaluation.comparison_records}


def summarise_comparisons(records: dict[str, np.ndarray]) -> dict:
    """summary["comparisons"] from the records keyed "baseline/weighting/band/field"."""
    comparisons: dict = {}
    for key in records:
        if key.count("/") != 3 or not key.endswith("/mse_win"):
            continue
        prefix = key.removesuffix("/mse_win")
        baseline, weighting, band = prefix.split("/")
        column = {name: records[f"{prefix}/{name}"] for name in COMPARISON_FIELDS}
        comparisons.setdefault(baseline, {}).setdefault(weighting, {})[band] = {
            "n_images": int(len(column["mse_win"])),
            "mse_win_fraction": float(np.mean(column["mse_win"])),
            "likelihood_win_fraction": float(np.mean(column["likelihood_win"])),
            "median_mse_model": float(np.median(column["mse_model"])),
            "median_mse_baseline": float(np.median(column["mse_baseline"])),
        }
    return comparisons


def summarise_records(records: dict[str, np.ndarray], n_pixels: int, label: str) -> dict:
    """The evaluate JSON from per-image records: the same for one process or many shards."""
    summary = metrics.summarise(n_pixels=n_pixels, **{k: records[k] for k in RECORD_FIELDS})
    summary["data"] = label
    summary["by_baseline_misfit"] = wins_by_baseline_misfit(
        records["mse_baseline"], records["mse_win"], records["likelihood_win"])
    comparisons = summarise_comparisons(records)
    if comparisons:
        summary["comparisons"] = comparisons
    return summary
