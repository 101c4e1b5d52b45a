"""The Sérsic baseline: its model is astropy's Sersic2D (PSF applied as astropy convolves), its
batched fit reaches astropy's per-image fit, and it respects ivar and masks."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.convolution import convolve
from astropy.modeling import fitting, models

from galaxy_model.sersic import convolve_psf, fit_sersic, psf_kernel, sersic_image
from mochapy.errors import DataError

SIZE = 41
TRUTH = np.array([
    [1.0, 4.0, 1.0, 20.2, 19.7, 0.3, 0.5, 0.02],
    [0.5, 5.0, 2.5, 21.3, 19.6, 0.5, -1.0, -0.01],
    [0.3, 3.0, 0.7, 18.6, 20.4, 0.1, 1.2, 0.0],
])


def rendered(psf_sigma: float, noise: float = 0.005, seed: int = 0) -> np.ndarray:
    images = convolve_psf(sersic_image(TRUTH, SIZE, SIZE), psf_kernel(psf_sigma))
    images = images + TRUTH[:, 7, None, None]
    return images + np.random.default_rng(seed).normal(0, noise, images.shape)


def test_the_model_is_astropys_sersic2d():
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    for params in TRUTH:
        expected = models.Sersic2D(*params[:7])(x, y)
        np.testing.assert_allclose(sersic_image(params[None], SIZE, SIZE)[0], expected,
                                   rtol=1e-12, atol=1e-14)


def test_the_psf_is_astropys_convolution_with_zero_beyond_the_edge():
    image = sersic_image(TRUTH[1:2], SIZE, SIZE)[0]
    kernel = psf_kernel(1.3)
    expected = convolve(image, np.outer(kernel, kernel), boundary="fill", fill_value=0.0,
                        normalize_kernel=True)
    np.testing.assert_allclose(convolve_psf(image[None], kernel)[0], expected, atol=1e-12)


def astropy_fit(image: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, float]:
    """astropy's own fitter on one image: Sersic2D + a constant sky, no PSF."""
    model = models.Sersic2D(*start[:7]) + models.Const2D(start[7])
    model.ellip_0.bounds = (0.0, 0.95)
    model.n_0.bounds = (0.3, 8.0)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    fitted = fitting.TRFLSQFitter()(model, x, y, image, maxiter=2000)
    params = np.array([*fitted.parameters])
    return params, float(np.sum((fitted(x, y) - image) ** 2))


def test_the_batched_fit_reaches_astropys_per_image_fit():
    images = rendered(psf_sigma=0.0)
    ours = fit_sersic(images, psf_sigma=0.0)
    assert ours.converged.all()
    for index, image in enumerate(images):
        params, cost = astropy_fit(image, ours.params[index] * 1.02)
        our_cost = float(np.sum((ours.model[index] - image) ** 2))
        assert our_cost <= cost * (1 + 1e-6)
        assert our_cost == pytest.approx(cost, rel=1e-4)
        np.testing.assert_allclose(ours.params[index, [1, 2, 3, 4, 5]], params[[1, 2, 3, 4, 5]],
                                   rtol=2e-3, atol=2e-3)


def test_the_psf_convolved_fit_recovers_the_truth():
    fit = fit_sersic(rendered(psf_sigma=1.2), psf_sigma=1.2)
    assert fit.converged.all()
    np.testing.assert_allclose(fit.params[:, :6], TRUTH[:, :6], rtol=0.05, atol=0.05)
    assert np.all(np.sqrt(fit.mse) < 0.0055)  # the noise level, 0.005


def test_masked_pixels_and_ivar_zero_do_not_move_the_fit():
    images = rendered(psf_sigma=1.0)
    mask = np.zeros(images.shape, np.uint8)
    mask[:, 5:9, 30:36] = 1
    ivar = np.full(images.shape, 4e4)
    ivar[:, 30:33, 3:8] = 0.0
    clean = fit_sersic(images, ivar=ivar, mask=mask)
    spoiled = images.copy()
    spoiled[mask == 1] = 50.0
    spoiled[ivar == 0] = -20.0
    again = fit_sersic(spoiled, ivar=ivar, mask=mask)
    np.testing.assert_allclose(again.params, clean.params, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(again.mse, clean.mse, rtol=1e-6)


def test_bands_are_fitted_alone_and_bad_ivar_is_refused():
    images = rendered(psf_sigma=1.0)
    fit = fit_sersic(np.stack([images, 2 * images], axis=1))
    assert fit.params.shape == (3, 2, 8) and fit.model.shape == (3, 2, SIZE, SIZE)
    np.testing.assert_allclose(fit.params[:, 1, 0], 2 * fit.params[:, 0, 0], rtol=1e-3)
    ivar = np.ones(images.shape)
    ivar[0, 1, 1] = -1.0
    with pytest.raises(DataError, match="ivar"):
        fit_sersic(images, ivar=ivar)
