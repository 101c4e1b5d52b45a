"""GaussianReconLoss with survey noise maps and masks: closed form, finite-difference gradients
(float64), unused pixels inert, and the compiled loop against the NumPy path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config

pytestmark = pytest.mark.usefixtures("cpu_loops")  # compiled CPU loops and NumPy paths

N, PIXELS = 3, 8


def survey_bottoms(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """mu, sigma, x, ivar (some 0) and mask (some 1) for N images of PIXELS pixels."""
    ivar = rng.uniform(0.5, 4.0, size=(N, PIXELS))
    ivar[0, 1] = ivar[2, 5] = 0.0
    mask = np.zeros((N, PIXELS))
    mask[1, 2] = mask[2, 5] = mask[0, 7] = 1.0
    return {"mu": rng.normal(size=(N, PIXELS)), "sigma": rng.uniform(0.3, 2.0, size=(N, PIXELS)),
            "x": rng.normal(size=(N, PIXELS)), "ivar": ivar, "mask": mask}


OPTIONS = {
    "ivar": {"ivar_bottom": True},
    "mask": {"mask_bottom": True},
    "ivar+mask": {"ivar_bottom": True, "mask_bottom": True},
    "noise": {"ivar_bottom": True, "mask_bottom": True, "variance": "model_plus_noise"},
    "noise-ivar-only": {"ivar_bottom": True, "variance": "model_plus_noise"},
}


def harness_for(bottoms: dict, **options):
    names = ["mu", "sigma", "x"]
    names += ["ivar"] * bool(options.get("ivar_bottom"))
    names += ["mask"] * bool(options.get("mask_bottom"))
    config = make_config("GaussianReconLoss", name="recon", bottoms=names, **options)
    return LayerHarness(config, {k: bottoms[k] for k in names},
                        grad_bottoms=("mu", "sigma"))


def closed_form(bottoms: dict, weight: float, **options) -> float:
    used = np.ones((N, PIXELS), dtype=bool)
    if options.get("ivar_bottom"):
        used &= bottoms["ivar"] > 0
    if options.get("mask_bottom"):
        used &= bottoms["mask"] == 0
    variance = bottoms["sigma"] ** 2
    if options.get("variance") == "model_plus_noise":
        variance = variance + 1.0 / np.where(used, bottoms["ivar"], 1.0)
    logpdf = norm.logpdf(bottoms["x"], loc=bottoms["mu"], scale=np.sqrt(variance))
    return -weight / N * float(logpdf[used].sum())


@pytest.mark.parametrize("name", list(OPTIONS))
def test_loss_is_the_normal_density_of_the_used_pixels_and_its_gradient(name, rng):
    bottoms = survey_bottoms(rng)
    options = {**OPTIONS[name], "weight": 0.6}
    harness = harness_for(bottoms, **options)
    assert harness.objective() == pytest.approx(closed_form(bottoms, **options), rel=1e-12)
    harness.check_gradients()


@pytest.mark.parametrize("name", list(OPTIONS))
def test_unused_pixels_contribute_no_loss_and_no_gradient(name, rng):
    """Changing x, mu and sigma at masked or ivar-0 pixels changes nothing."""
    bottoms = survey_bottoms(rng)
    options = OPTIONS[name]
    unused = np.zeros((N, PIXELS), dtype=bool)
    if options.get("ivar_bottom"):
        unused |= bottoms["ivar"] == 0
    if options.get("mask_bottom"):
        unused |= bottoms["mask"] != 0
    before = harness_for(bottoms, **options)
    loss, grads = before.objective(), before.gradients()
    changed = {k: v.copy() for k, v in bottoms.items()}
    for key, value in (("x", 50.0), ("mu", -30.0), ("sigma", 1e-3)):
        changed[key][unused] = value
    after = harness_for(changed, **options)
    assert after.objective() == pytest.approx(loss, rel=1e-13)
    for key in ("mu", "sigma"):
        assert np.all(grads[key][unused] == 0.0)
        np.testing.assert_allclose(after.gradients()[key], grads[key], rtol=1e-13)


def test_without_survey_bottoms_the_loss_is_the_posters(rng):
    """ivar all positive and mask all 0 with variance: model give the poster's loss exactly."""
    bottoms = survey_bottoms(rng)
    bottoms["ivar"][:] = 2.0
    bottoms["mask"][:] = 0.0
    plain = harness_for(bottoms)
    survey = harness_for(bottoms, ivar_bottom=True, mask_bottom=True)
    assert survey.objective() == pytest.approx(plain.objective(), rel=1e-12)
    plain_grads, survey_grads = plain.gradients(), survey.gradients()
    for key in ("mu", "sigma"):
        np.testing.assert_allclose(survey_grads[key], plain_grads[key], rtol=1e-12)


def test_model_plus_noise_gradients_have_the_closed_form(rng):
    bottoms = survey_bottoms(rng)
    harness = harness_for(bottoms, **OPTIONS["noise"])
    grads = harness.gradients()
    used = (bottoms["ivar"] > 0) & (bottoms["mask"] == 0)
    variance = bottoms["sigma"] ** 2 + 1.0 / np.where(used, bottoms["ivar"], 1.0)
    r = bottoms["x"] - bottoms["mu"]
    dmu = np.where(used, -r / variance / N, 0.0)
    dsigma = np.where(used, bottoms["sigma"] * (1 - r * r / variance) / variance / N, 0.0)
    np.testing.assert_allclose(grads["mu"], dmu, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["sigma"], dsigma, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("options", "field"), [
    ({"variance": "model_plus_noise"}, "variance"),
    ({"ivar_bottom": True}, "bottoms"),
])
def test_config_errors_name_the_field(options, field):
    with pytest.raises(ConfigError, match=f"'recon'.*'{field}'"):
        make_config("GaussianReconLoss", name="recon", bottoms=["mu", "sigma", "x"],
                    **options)


def test_beta_and_mean_sd_act_on_used_pixels_only(rng):
    bottoms = survey_bottoms(rng)
    options = OPTIONS["noise"]
    used = (bottoms["ivar"] > 0) & (bottoms["mask"] == 0)
    plain = harness_for(bottoms, **options).gradients()
    beta = harness_for(bottoms, beta=0.5, **options).gradients()
    variance = bottoms["sigma"] ** 2 + 1.0 / np.where(used, bottoms["ivar"], 1.0)
    for key in ("mu", "sigma"):
        np.testing.assert_allclose(beta[key], plain[key] * np.sqrt(variance), rtol=1e-12)
    fixed = harness_for(bottoms, mean_sd=0.5, **options).gradients()
    expected = np.where(used, (bottoms["mu"] - bottoms["x"]) / 0.25 / N, 0.0)
    np.testing.assert_allclose(fixed["mu"], expected, rtol=1e-12)
    assert math.isfinite(float(fixed["sigma"].sum()))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["ivar+mask", "noise", "mask"])
def test_cuda_kernel_matches_the_cpu_path(name, rng, gpu_runtime):
    """The CUDA kernel (on a device, else the CUDA emulation) against the CPU path, float64,
    every gradient poisoned with NaN first (an unused pixel's zero must be written)."""
    from mochapy.backends import CPUBackend
    from mochapy.backends.gpu import GPUBackend

    gpu = GPUBackend("float64")
    bottoms = survey_bottoms(rng)
    names = ["mu", "sigma", "x"]
    names += ["ivar"] * bool(OPTIONS[name].get("ivar_bottom"))
    names += ["mask"] * bool(OPTIONS[name].get("mask_bottom"))
    config = make_config("GaussianReconLoss", name="recon", bottoms=names, weight=0.6,
                         **OPTIONS[name])
    inputs = {k: bottoms[k] for k in names}
    cpu = LayerHarness(config, inputs, backend=CPUBackend("float64"),
                       grad_bottoms=("mu", "sigma"))
    device = LayerHarness(config, inputs, backend=gpu, grad_bottoms=("mu", "sigma"))
    for blob in device.layer.bottoms[:2]:
        blob.diff.fill(np.nan)
    expected, got = cpu.gradients(), device.gradients()
    assert float(gpu.to_host(device.layer.loss_value)[0]) == pytest.approx(cpu.layer.loss,
                                                                          rel=1e-11)
    for key in ("mu", "sigma"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-11, atol=1e-14)
