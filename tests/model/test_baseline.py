"""The Gaussian baseline against known truths and against astropy.modeling's fitters."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from astropy.modeling import fitting, models

from galaxy_model import baseline
from galaxy_model.baseline import covariance_from_params, fit_gaussian2d, gaussian2d_image
from mochapy.errors import DataError

SIZE = 69
ROWS, COLUMNS = np.mgrid[:SIZE, :SIZE]
# Our fit must reach astropy's optimum or a better one: MSE at most this much above astropy's.
MSE_RELATIVE_TOLERANCE = 1e-6
# Where the problem is well posed (one noisy Gaussian), parameters agree to astropy's own
# convergence precision (its default acc = 1e-7 stops ~1e-6 short); this leaves a margin.
PARAMETER_TOLERANCE = 1e-4


def astropy_params(rng: np.random.Generator) -> dict[str, float]:
    return {
        "amplitude": rng.uniform(0.5, 2.0),
        "x_mean": rng.uniform(25, 44),
        "y_mean": rng.uniform(25, 44),
        "x_stddev": rng.uniform(1.5, 8.0),
        "y_stddev": rng.uniform(1.5, 8.0),
        "theta": rng.uniform(-1.5, 1.5),
    }


def sample_images() -> tuple[np.ndarray, int]:
    """Seven noisy Gaussians (well posed), then four images no single Gaussian describes."""
    rng = np.random.default_rng(5)
    images = [
        models.Gaussian2D(**astropy_params(rng))(COLUMNS, ROWS) + rng.normal(0, 0.05, ROWS.shape)
        for _ in range(7)
    ]
    disc = models.Gaussian2D(1.0, 34, 34, 6, 3, 0.4)(COLUMNS, ROWS)
    companion = models.Gaussian2D(0.8, 52, 18, 2, 2, 0)(COLUMNS, ROWS)
    images.append(disc + companion + rng.normal(0, 0.03, ROWS.shape))
    radius = np.hypot(COLUMNS - 34, ROWS - 35)
    images.append(np.exp(-((radius - 15) ** 2) / 8) + rng.normal(0, 0.03, ROWS.shape))
    images.append(
        np.exp(-np.hypot(COLUMNS - 30, ROWS - 36) / 3) + rng.uniform(-0.15, 0.15, ROWS.shape)
    )
    # Two galaxies of similar brightness far apart: the start matters.
    pair = models.Gaussian2D(1.0, 15, 20, 3, 2, 0.3) + models.Gaussian2D(0.9, 50, 48, 4, 3, -1)
    images.append(pair(COLUMNS, ROWS) + rng.normal(0, 0.02, ROWS.shape))
    return np.array(images), 7


def fit_with_astropy(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Best astropy LevMarLSQFitter fit from two starts: the moments and the brightest pixel."""
    positive = np.clip(image, 0, None)
    total = positive.sum()
    x_moment, y_moment = (positive * COLUMNS).sum() / total, (positive * ROWS).sum() / total
    y_peak, x_peak = np.unravel_index(np.argmax(image), image.shape)
    best_params, best_mse = None, np.inf
    for x0, y0 in ((x_moment, y_moment), (x_peak, y_peak)):
        start = models.Gaussian2D(image.max(), x0, y0, 5.0, 5.0, 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = fitting.LevMarLSQFitter()(start, COLUMNS, ROWS, image, maxiter=2000)
        mse = float(np.mean((fitted(COLUMNS, ROWS) - image) ** 2))
        if mse < best_mse:
            best_params, best_mse = np.array(fitted.parameters), mse
    return best_params, best_mse


def test_fit_matches_or_beats_astropy_on_sample_images():
    images, well_posed = sample_images()
    fit = fit_gaussian2d(images)
    assert fit.converged.all()
    for index, image in enumerate(images):
        params, mse = fit_with_astropy(image)
        assert fit.mse[index] <= mse * (1 + MSE_RELATIVE_TOLERANCE), index
        if index < well_posed:
            ours = fit.params[index]
            np.testing.assert_allclose(ours[0], params[0], rtol=PARAMETER_TOLERANCE)
            np.testing.assert_allclose(ours[1:3], params[1:3], atol=PARAMETER_TOLERANCE)
            np.testing.assert_allclose(
                covariance_from_params(ours),
                covariance_from_params(params),
                rtol=PARAMETER_TOLERANCE,
                atol=PARAMETER_TOLERANCE * np.abs(covariance_from_params(params)).max(),
            )


def test_model_is_astropys_gaussian_with_the_reported_parameters():
    images, _ = sample_images()
    fit = fit_gaussian2d(images[:3])
    for params, model in zip(fit.params, fit.model, strict=True):
        expected = models.Gaussian2D(*params)(COLUMNS, ROWS)
        np.testing.assert_allclose(model, expected, rtol=1e-9, atol=1e-12)
        assert params[3] >= params[4] > 0
        assert -np.pi / 2 < params[5] <= np.pi / 2


def test_recovers_noiseless_gaussians_exactly():
    rng = np.random.default_rng(0)
    truth = np.array([[*astropy_params(rng).values()] for _ in range(6)])
    truth[:, 3:5] = np.sort(truth[:, 3:5], axis=1)[:, ::-1]  # σx >= σy, as reported
    images = gaussian2d_image(truth, SIZE, SIZE)
    fit = fit_gaussian2d(images.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(fit.params[:, :3], truth[:, :3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fit.covariance, covariance_from_params(truth), rtol=1e-4, atol=1e-4)
    assert np.all(fit.mse < 1e-13)


def test_normal_equations_match_finite_differences():
    height, width = 20, 25
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, height * width))
    weights = (rng.random((3, height * width)) > 0.2).astype(float)
    theta = np.array(
        [
            [0.3, 0.8, -1.2, -1.0, 0.3, -0.7],
            [-2.0, 3.0, 4.0, -2.0, -0.5, -1.5],
            [0.1, -1.0, 0.5, 0.1, 0.2, 0.3],
        ]
    )
    signs = np.array([1.0, -1.0, 1.0])
    rows, columns = np.divmod(np.arange(height * width), width)
    x, y = columns - (width - 1) / 2, rows - (height - 1) / 2

    def model(params: np.ndarray, sign: float) -> np.ndarray:
        c0, b1, b2, s1, l21, s2 = params
        u = np.exp(s1) * x + l21 * y
        v = np.exp(s2) * y
        return sign * np.exp(c0 + b1 * x + b2 * y - 0.5 * (u * u + v * v))

    for image_weights in (None, weights):
        with ThreadPoolExecutor(2) as pool:
            problem = baseline._GaussianMoments(
                images, image_weights, signs, height, width, pool, 2
            )
            cost, normal, gradient = problem.evaluate(np.arange(3), theta)
        for i in range(3):
            w = np.ones(height * width) if image_weights is None else image_weights[i]
            jacobian = np.empty((height * width, 6))
            for j in range(6):
                step = np.zeros(6)
                step[j] = 1e-6
                jacobian[:, j] = (
                    model(theta[i] + step, signs[i]) - model(theta[i] - step, signs[i])
                ) / 2e-6
            residual = model(theta[i], signs[i]) - images[i]
            np.testing.assert_allclose(cost[i], 0.5 * np.sum(w * residual**2), rtol=1e-12)
            np.testing.assert_allclose(
                normal[i],
                jacobian.T @ (w[:, None] * jacobian),
                rtol=1e-7,
                atol=1e-7 * np.abs(normal[i]).max(),
            )
            np.testing.assert_allclose(
                gradient[i],
                jacobian.T @ (w * residual),
                rtol=1e-7,
                atol=1e-7 * np.abs(gradient[i]).max(),
            )


def test_masked_pixels_do_not_enter_the_fit():
    truth = np.array([[1.5, 30.0, 38.0, 6.0, 3.0, 0.5]])
    image = gaussian2d_image(truth, SIZE, SIZE)
    mask = np.zeros_like(image, dtype=np.uint8)
    mask[0, 10:20, 40:60] = 1
    image[mask == 1] = 50.0
    image[0, 12, 45] = np.nan
    fit = fit_gaussian2d(image, mask=mask)
    np.testing.assert_allclose(fit.params, truth, rtol=1e-6, atol=1e-6)
    with pytest.raises(DataError, match="NaN"):
        fit_gaussian2d(image)


def test_band_axis_and_three_bands():
    images, _ = sample_images()
    single = fit_gaussian2d(images[:3])
    with_axis = fit_gaussian2d(images[:3, None])
    np.testing.assert_array_equal(with_axis.params, single.params)
    assert with_axis.model.shape == (3, SIZE, SIZE)
    three = fit_gaussian2d(images[:6].reshape(2, 3, SIZE, SIZE))
    assert three.params.shape == (2, 3, 6) and three.model.shape == (2, 3, SIZE, SIZE)
    per_band = fit_gaussian2d(images[:6])
    np.testing.assert_allclose(three.params.reshape(6, 6), per_band.params, rtol=1e-12)
    np.testing.assert_allclose(three.mse, per_band.mse.reshape(2, 3).mean(axis=1), rtol=1e-12)


def test_blank_image_and_bad_shapes():
    fit = fit_gaussian2d(np.zeros((2, 16, 16)))
    assert np.all(np.abs(fit.model) < 1e-300) and np.all(fit.mse == 0) and fit.converged.all()
    with pytest.raises(DataError, match="expected"):
        fit_gaussian2d(np.zeros((16, 16)))
    with pytest.raises(DataError, match="mask"):
        fit_gaussian2d(np.zeros((2, 16, 16)), mask=np.zeros((3, 16, 16)))
