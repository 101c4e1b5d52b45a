"""A Sérsic baseline: the parametric model survey pipelines fit (GALFIT, Imfit; Simard et al.
2011 for all of SDSS), beside the poster's scaled Gaussian.

Each image (each band of it) is modelled as a PSF-convolved elliptical Sérsic profile on a flat
sky,
    x̂ = P * S + sky,   S = astropy.modeling.models.Sersic2D(amplitude, r_eff, n, x_0, y_0,
                                                           ellip, theta)
evaluated at pixel centres (px the column, py the row index, astropy's convention), P a
normalised Gaussian PSF of sd `psf_sigma` pixels sampled at pixel centres (0: no PSF), applied
with zero padding beyond the image. Eight parameters per image, fitted by (weighted) least
squares: weights ivar where given, masked pixels and pixels with ivar 0 left out.

The fit is our own, vectorised over images: the Levenberg-Marquardt loop of galaxy_model.baseline
with an analytic Jacobian (every derivative of S is S times a closed form in the elliptical
radius; P is linear, so the Jacobian's columns are convolved like the model). Internally n, ellip
and r_eff are kept in range by a logistic (n in [N_MIN, N_MAX], ellip in [0, ELLIP_MAX]) and a
log (r_eff). One start per image; astropy's own per-image
fitter reaches the same optimum (tests/survey/test_sersic.py) at a few hundred times the cost.
The start is the poster's least-squares Gaussian, as the Sérsic of n = 1/2 it equals.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, gammaincinv, logit
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from galaxy_model.baseline import (
    _centroid_and_covariance,
    fit_gaussian2d,
    fit_inputs,
    levenberg_marquardt,
)
from mochapy.errors import DataError

PARAM_NAMES = ("amplitude", "r_eff", "n", "x_0", "y_0", "ellip", "theta", "sky")
N_MIN, N_MAX = 0.3, 8.0
ELLIP_MAX = 0.95
LOG_R_EFF_LIMITS = (np.log(0.1), np.log(1000.0))
START_N = 1.5
FTOL = 1e-9
PSF_TRUNCATE = 4.0  # the PSF kernel reaches this many sd
BLOCK_IMAGES = 64  # images per block of pixel work (its Jacobian stays a few MB)
MIN_RADIUS_SQUARED = 1e-12  # z² floor: the derivatives of S are singular at its centre


@dataclass(frozen=True)
class SersicFit:
    """Per-image Sérsic fits.

    params: (N, 8) or (N, C, 8) in PARAM_NAMES order: astropy's Sersic2D parameters, then sky.
    model: the fitted x̂ (PSF-convolved, sky included), shaped like the input minus a singleton
        band axis.
    mse: (N,) mean squared residual (unweighted) over the pixels that entered the fit.
    converged: (N,) whether Levenberg-Marquardt met its tolerance (for every band).
    """

    params: np.ndarray
    model: np.ndarray
    mse: np.ndarray
    converged: np.ndarray


def psf_kernel(psf_sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer product with itself is the PSF (odd length)."""
    if psf_sigma <= 0:
        return np.ones(1)
    radius = max(1, int(np.ceil(PSF_TRUNCATE * psf_sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / psf_sigma) ** 2)
    return kernel / kernel.sum()


def blur_matrix(kernel: np.ndarray, length: int) -> np.ndarray:
    """(length, length) B with B @ v = v correlated with `kernel`, zero beyond the ends."""
    radius = len(kernel) // 2
    offsets = np.arange(length)[None, :] - np.arange(length)[:, None]
    inside = np.abs(offsets) <= radius
    return np.where(inside, kernel[np.clip(offsets + radius, 0, len(kernel) - 1)], 0.0)


def convolve_psf(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """P * images over the last two axes, zero beyond the edges (the PSF is separable)."""
    if len(kernel) == 1:
        return images
    height, width = images.shape[-2:]
    rows = blur_matrix(kernel, height).astype(images.dtype)
    columns = blur_matrix(kernel, width).astype(images.dtype)
    # two single matrix products over the whole batch (a batch of small ones is slower)
    blurred_columns = (images.reshape(-1, width) @ columns.T).reshape(-1, height, width)
    blurred = np.tensordot(rows, blurred_columns, axes=([1], [1]))  # (height, batch, width)
    return blurred.transpose(1, 0, 2).reshape(images.shape)


def sersic_image(params: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sersic2D at every pixel centre for params (..., 7+) in PARAM_NAMES order (no sky, no PSF)."""
    grid = _pixel_grid(height, width, np.float64)
    profile = _Profile(params[..., :7].reshape(-1, 7), *grid).value
    return profile.reshape(params.shape[:-1] + (height, width))


def _pixel_grid(height: int, width: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's column and row index, (P,) each, row-major."""
    return (np.tile(np.arange(width, dtype=dtype), height),
            np.repeat(np.arange(height, dtype=dtype), width))


class _Profile:
    """Sersic2D (k, P) for params (k, 7) at pixels (px, py), in the grid's dtype, and what its
    derivatives need: S = A exp(-b_n (z^(1/n) - 1)), z² = (major/r_eff)² + (minor/b)²."""

    def __init__(self, params: np.ndarray, px: np.ndarray, py: np.ndarray) -> None:
        dtype = px.dtype
        column = [params[:, i, None].astype(dtype) for i in range(7)]
        self.amplitude, self.r_eff, self.n, x_0, y_0, self.ellip, theta = column
        self.cos, self.sin = np.cos(theta), np.sin(theta)
        dx, dy = px[None, :] - x_0, py[None, :] - y_0
        self.major = dx * self.cos + dy * self.sin
        self.minor = dy * self.cos - dx * self.sin
        self.inv_a2 = self.r_eff**-2
        self.inv_b2 = ((1 - self.ellip) * self.r_eff) ** -2
        self.z2 = self.major**2 * self.inv_a2 + self.minor**2 * self.inv_b2
        np.maximum(self.z2, MIN_RADIUS_SQUARED, out=self.z2)
        self.bn = gammaincinv(2.0 * params[:, 2, None], 0.5).astype(dtype)
        self.log_z2 = np.log(self.z2)
        self.s = np.exp(self.log_z2 / (2 * self.n))  # z^(1/n)
        self.unit = np.exp(-self.bn * (self.s - 1))
        self.value = self.amplitude * self.unit


def _bn_slope(n: np.ndarray) -> np.ndarray:
    """d b_n / d n, b_n = gammaincinv(2n, 1/2), by a central difference."""
    step = 1e-5 * np.maximum(n, 1.0)
    return (gammaincinv(2.0 * (n + step), 0.5) - gammaincinv(2.0 * (n - step), 0.5)) / (2 * step)


class _SersicProblem:
    """Cost, JᵀWJ and JᵀWr of ½ Σ w (x̂ - y)² for rows (one per image) at internal parameters

        theta = (amplitude, sky, x_0, y_0, log r_eff, logit n', logit ellip', theta),

    n = N_MIN + (N_MAX - N_MIN) n', ellip = ELLIP_MAX ellip'. The pixel work is in float32
    (the model, its Jacobian and the PSF as two matrix products); residuals and sums in float64.
    Blocks of BLOCK_IMAGES rows are shared between the pool's threads.
    """

    def __init__(self, images: np.ndarray, weights: np.ndarray | None, height: int, width: int,
                 kernel: np.ndarray, pool: ThreadPoolExecutor, workers: int) -> None:
        self.images, self.weights = images, weights
        self.height, self.width = height, width
        self.kernel, self.pool, self.workers = kernel, pool, workers
        self.grid = _pixel_grid(height, width, np.float32)

    @staticmethod
    def constrain(theta: np.ndarray) -> np.ndarray:
        theta[:, 4] = np.clip(theta[:, 4], *LOG_R_EFF_LIMITS)
        theta[:, 5:7] = np.clip(theta[:, 5:7], -30.0, 30.0)
        return theta

    def _convolved(self, images: np.ndarray) -> np.ndarray:
        shaped = images.reshape(-1, self.height, self.width)
        return convolve_psf(shaped, self.kernel).reshape(images.shape)

    def model(self, theta: np.ndarray) -> np.ndarray:
        """x̂ (k, P) at internal parameters, block by block (float64 grid: the reported fit)."""
        grid = _pixel_grid(self.height, self.width, np.float64)
        out = np.empty((len(theta), self.height * self.width))
        for first in range(0, len(theta), BLOCK_IMAGES):
            part = slice(first, first + BLOCK_IMAGES)
            profile = _Profile(to_public(theta[part])[:, :7], *grid).value
            out[part] = self._convolved(profile) + theta[part, 1, None]
        return out

    def evaluate(self, rows: np.ndarray, theta: np.ndarray):
        blocks = [slice(i, i + BLOCK_IMAGES) for i in range(0, len(rows), BLOCK_IMAGES)]

        def run(block: slice):
            return self._evaluate_block(rows[block], theta[block])

        with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
            parts = list(self.pool.map(run, blocks)) if self.workers > 1 else map(run, blocks)
            return [np.concatenate(values) for values in zip(*parts, strict=True)]

    def _evaluate_block(self, rows: np.ndarray, theta: np.ndarray):
        public = to_public(theta)
        unit_params = public[:, :7].copy()
        unit_params[:, 0] = 1.0
        profile = _Profile(unit_params, *self.grid)
        major, minor, cos, sin = profile.major, profile.minor, profile.cos, profile.sin
        inv_a2, inv_b2, ellip, n = profile.inv_a2, profile.inv_b2, profile.ellip, profile.n
        unit, s, bn = profile.unit, profile.s, profile.bn
        amplitude = public[:, 0, None].astype(np.float32)
        # dS/d(z²) = -A b_n z^(1/n) S1 / (2 n z²), S1 the unit-amplitude profile
        per_z2 = -amplitude * bn * s * unit / (2 * n * profile.z2)
        fraction_n = (n - N_MIN) / (N_MAX - N_MIN)
        fraction_e = ellip / ELLIP_MAX
        slope = _bn_slope(public[:, 2, None]).astype(np.float32)
        jacobian = np.empty((len(rows), 8, self.height * self.width), dtype=np.float32)
        jacobian[:, 0] = unit
        jacobian[:, 1] = 1.0  # sky
        jacobian[:, 2] = per_z2 * -2 * (major * inv_a2 * cos - minor * inv_b2 * sin)  # x_0
        jacobian[:, 3] = per_z2 * -2 * (major * inv_a2 * sin + minor * inv_b2 * cos)  # y_0
        # log r_eff: d(z²) = -2 z², written without the z² that may be floored at the centre
        jacobian[:, 4] = amplitude * bn * s * unit / n
        jacobian[:, 5] = (amplitude * unit * (bn * s * profile.log_z2 / (2 * n * n)
                                             - slope * (s - 1))
                          * (N_MAX - N_MIN) * fraction_n * (1 - fraction_n))  # logit n'
        jacobian[:, 6] = (per_z2 * 2 * minor**2 * inv_b2 / (1 - ellip)
                          * ELLIP_MAX * fraction_e * (1 - fraction_e))  # logit ellip'
        jacobian[:, 7] = per_z2 * 2 * major * minor * (inv_a2 - inv_b2)  # theta
        blurred = self._convolved(jacobian[:, [0, 2, 3, 4, 5, 6, 7]])
        jacobian[:, [0, 2, 3, 4, 5, 6, 7]] = blurred
        model = public[:, 0, None] * blurred[:, 0].astype(np.float64) + theta[:, 1, None]
        residual = model - self.images[rows]
        if self.weights is None:
            weighted_residual, weighted = residual, jacobian
        else:
            weights = self.weights[rows]
            weighted_residual = residual * weights
            weighted = jacobian * weights[:, None].astype(np.float32)
        cost = 0.5 * np.einsum("kp,kp->k", residual, weighted_residual)
        normal = (weighted @ jacobian.transpose(0, 2, 1)).astype(np.float64)
        gradient = np.einsum("kip,kp->ki", jacobian, weighted_residual.astype(np.float32))
        return cost, normal, gradient.astype(np.float64)


def to_public(theta: np.ndarray) -> np.ndarray:
    """Internal parameters -> PARAM_NAMES order (theta wrapped into (-π/2, π/2])."""
    public = np.empty_like(theta)
    public[:, 0] = theta[:, 0]
    public[:, 1] = np.exp(theta[:, 4])
    public[:, 2] = N_MIN + (N_MAX - N_MIN) * expit(theta[:, 5])
    public[:, 3:5] = theta[:, 2:4]
    public[:, 5] = ELLIP_MAX * expit(theta[:, 6])
    public[:, 6] = theta[:, 7]
    public[:, 7] = theta[:, 1]
    return public


def _public_angle(angle: np.ndarray) -> np.ndarray:
    return np.pi / 2 - np.mod(np.pi / 2 - angle, np.pi)


def to_internal(public: np.ndarray) -> np.ndarray:
    theta = np.empty_like(public)
    theta[:, 0] = public[:, 0]
    theta[:, 1] = public[:, 7]
    theta[:, 2:4] = public[:, 3:5]
    theta[:, 4] = np.log(public[:, 1])
    theta[:, 5] = logit((public[:, 2] - N_MIN) / (N_MAX - N_MIN))
    theta[:, 6] = logit(public[:, 5] / ELLIP_MAX)
    theta[:, 7] = public[:, 6]
    return theta


def _starts(images: np.ndarray, weights: np.ndarray | None, height: int, width: int,
            kernel: np.ndarray) -> np.ndarray:
    """Public parameters (n, 8): the Gaussian fit, weighted alike (galaxy_model.baseline, best of
    four starts) as the Sérsic of n = 1/2 it equals (r_eff = sqrt(2 ln 2) sigma), or, where that fit
    ran off, the moments of the image's squared positive pixels with n = START_N; then the best
    amplitude and sky under the PSF."""
    used = None if weights is None else (weights > 0).astype(np.float64)
    start = _moment_starts(images, used, height, width)
    gaussian = fit_gaussian2d(images.reshape(-1, height, width), ivar=None if weights is None
                              else weights.reshape(-1, height, width))
    amplitude, x_mean, y_mean, major, minor, angle = gaussian.params.T
    sane = (np.isfinite(gaussian.params).all(axis=1) & (amplitude > 0)
            & (x_mean >= 0) & (x_mean <= width - 1) & (y_mean >= 0) & (y_mean <= height - 1)
            & (minor > 0.3) & (major < max(height, width)))
    from_gaussian = np.column_stack([
        amplitude, np.sqrt(2 * np.log(2)) * major, np.full(len(images), 0.5), x_mean, y_mean,
        np.clip(1 - minor / np.where(major > 0, major, 1.0), 0.0, 0.9), angle,
        np.zeros(len(images)),
    ])
    start[sane] = from_gaussian[sane]
    return _best_amplitude_and_sky(start, images, used, height, width, kernel)


def _moment_starts(images: np.ndarray, used: np.ndarray | None, height: int,
                   width: int) -> np.ndarray:
    """Centre, size, shape and angle from the moments of each image's bright core."""
    positive = np.clip(images, 0.0, None)
    if used is not None:
        positive = positive * used
    centre, cov = _centroid_and_covariance(positive**2, height, width)
    cov = 2.0 * cov + 0.5 * np.eye(2)  # a Gaussian's square has half its covariance
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    major = eigenvectors[:, :, 1]
    start = np.zeros((len(images), 8))
    start[:, 1] = np.clip(1.18 * np.sqrt(eigenvalues[:, 1]), 0.5, 0.5 * max(height, width))
    start[:, 2] = START_N
    start[:, 3] = centre[:, 0] + (width - 1) / 2.0
    start[:, 4] = centre[:, 1] + (height - 1) / 2.0
    start[:, 5] = np.clip(1.0 - np.sqrt(eigenvalues[:, 0] / eigenvalues[:, 1]), 0.05, 0.8)
    start[:, 6] = np.arctan2(major[:, 1], major[:, 0])
    return start


def _best_amplitude_and_sky(start: np.ndarray, images: np.ndarray, used: np.ndarray | None,
                            height: int, width: int, kernel: np.ndarray) -> np.ndarray:
    """start with the amplitude and sky that fit each image best for its shape (linear)."""
    start = start.copy()
    start[:, 0] = 1.0
    unit = convolve_psf(sersic_image(start, height, width), kernel).reshape(len(images), -1)
    weight = np.ones_like(unit) if used is None else used
    # best amplitude and sky of  y ≈ A unit + sky  by weighted linear least squares
    suu, su1, s11 = (weight * unit * unit).sum(1), (weight * unit).sum(1), weight.sum(1)
    suy, s1y = (weight * unit * images).sum(1), (weight * images).sum(1)
    det = suu * s11 - su1**2
    safe = np.where(det > 0, det, 1.0)
    start[:, 0] = np.where(det > 0, (suy * s11 - su1 * s1y) / safe, 1.0)
    start[:, 7] = np.where(det > 0, (suu * s1y - su1 * suy) / safe, 0.0)
    start[:, 0] = np.where(start[:, 0] > 0, start[:, 0], np.abs(images).max(axis=1) + 1e-12)
    return start


def fit_sersic(
    images: np.ndarray,
    ivar: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    psf_sigma: float = 1.0,
    max_iter: int = 100,
    progress: bool = False,
) -> SersicFit:
    """Fit a PSF-convolved Sérsic profile plus sky to every image (every band of every image).

    images: (N, H, W) or (N, C, H, W); ivar and mask optional, broadcastable to images (mask 1:
    bad; ivar 0: no information); psf_sigma: the Gaussian PSF's sd in pixels (0: none).
    """
    if psf_sigma < 0:
        raise DataError(f"psf_sigma: must be >= 0 pixels, got {psf_sigma}")
    flat, flat_weights, per_band_shape, (height, width) = fit_inputs(images, ivar, mask)
    used = None if flat_weights is None else (flat_weights > 0).astype(np.float64)
    kernel = psf_kernel(psf_sigma)
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = workers or 1
    batch = 1024
    theta, converged = np.empty((len(flat), 8)), np.empty(len(flat), dtype=bool)
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        for first in tqdm(range(0, len(flat), batch), desc="Sérsic fits", unit="batch",
                          disable=None if progress else True):
            part = slice(first, first + batch)
            part_weights = None if flat_weights is None else flat_weights[part]
            problem = _SersicProblem(flat[part], part_weights, height, width, kernel, pool,
                                     workers)
            start = to_internal(_starts(flat[part], part_weights, height, width, kernel))
            theta[part], _, converged[part] = levenberg_marquardt(
                problem, problem.constrain(start), max_iter, ftol=FTOL
            )
        problem = _SersicProblem(flat, flat_weights, height, width, kernel, pool, workers)
        model = problem.model(theta)
    params = to_public(theta)
    params[:, 6] = _public_angle(params[:, 6])
    n_images = per_band_shape[0]
    squared = ((model - flat) ** 2).reshape(n_images, -1)
    if used is not None:
        per_image_used = used.reshape(n_images, -1)
        mse = (squared * per_image_used).sum(axis=1) / np.maximum(per_image_used.sum(axis=1), 1)
    else:
        mse = squared.mean(axis=1)
    params = params.reshape(per_band_shape + (8,))
    model = model.reshape(per_band_shape + (height, width))
    converged = converged.reshape(n_images, -1).all(axis=1)
    if per_band_shape[1:] == (1,):
        params, model = params[:, 0], model[:, 0]
    return SersicFit(params=params, model=model, mse=mse, converged=converged)
