"""Computing layers: forward against independent closed forms, backward against finite
differences in float64 (every entry of every bottom and parameter)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm

from mochapy.errors import ConfigError
from tests.helpers import LayerHarness, make_config

pytestmark = pytest.mark.usefixtures("cpu_loops")  # compiled CPU loops and NumPy paths

NEURON_FORMS = {
    "Identity": lambda v: v,
    "ReLU": lambda v: np.where(v > 0, v, 0.0),
    "Sigmoid": expit,
    "Tanh": np.tanh,
    "Exponential": np.exp,
}


@pytest.mark.parametrize("neuron", [*NEURON_FORMS, {"type": "ReLU", "epsilon": 0.05}],
                         ids=[*NEURON_FORMS, "ReLU-eps"])
def test_inner_product_forward_and_gradients(neuron, rng) -> None:
    x = rng.normal(size=(4, 2, 3))
    config = make_config(
        "InnerProduct", name="ip", bottoms=["x"], tops=["y"], output_dim=5, neuron=neuron,
        bias_init={"type": "Gaussian", "std": 0.5},
    )
    harness = LayerHarness(config, {"x": x})
    layer = harness.layer
    assert layer.weight.shape == (6, 5) and layer.bias.shape == (5,)
    layer.forward()
    pre = x.reshape(4, 6) @ layer.weight.data + layer.bias.data
    if isinstance(neuron, dict):
        expected = np.maximum(pre, neuron["epsilon"])
    else:
        expected = NEURON_FORMS[neuron](pre)
    np.testing.assert_allclose(layer.tops[0].data, expected, rtol=1e-12, atol=1e-14)
    harness.check_gradients()


def test_inner_product_gives_no_input_gradient_to_data(rng) -> None:
    config = make_config("InnerProduct", name="ip", bottoms=["x"], tops=["y"],
                         output_dim=3)
    harness = LayerHarness(config, {"x": rng.normal(size=(4, 2))}, grad_bottoms=())
    grads = harness.gradients()
    assert set(grads) == {"ip.weight", "ip.bias"}
    harness.check_gradients()


ELEMENTWISE = {
    "Add": np.add, "Subtract": np.subtract, "Multiply": np.multiply, "Divide": np.divide,
}


@pytest.mark.parametrize("operation", ELEMENTWISE)
def test_element_wise_forward_and_gradients(operation, rng) -> None:
    a = rng.normal(size=(3, 4))
    b = rng.uniform(0.5, 2.0, size=(3, 4)) * rng.choice([-1, 1], size=(3, 4))
    config = make_config("ElementWise", name="ew", bottoms=["a", "b"], tops=["y"],
                         operation=operation)
    harness = LayerHarness(config, {"a": a, "b": b})
    harness.layer.forward()
    np.testing.assert_allclose(harness.layer.tops[0].data, ELEMENTWISE[operation](a, b),
                               rtol=1e-15)
    harness.check_gradients()


def test_element_wise_rejects_unequal_shapes(rng) -> None:
    config = make_config("ElementWise", name="ew", bottoms=["a", "b"], tops=["y"])
    with pytest.raises(ConfigError, match="'ew'.*differ"):
        LayerHarness(config, {"a": np.zeros((2, 3)), "b": np.zeros((2, 4))})


@pytest.mark.parametrize(("power", "scale", "shift"),
                         [(2.0, 0.5, 1.0), (0.5, 2.0, 3.0), (-1.0, 1.0, 4.0), (3.0, -1.5, 0.0)])
def test_power_forward_and_gradients(power, scale, shift, rng) -> None:
    x = rng.uniform(-1, 1, size=(3, 5))
    config = make_config("Power", name="pow", bottoms=["x"], tops=["y"], power=power,
                         scale=scale, shift=shift)
    harness = LayerHarness(config, {"x": x})
    harness.layer.forward()
    expected = [[(scale * v + shift) ** power for v in row] for row in x.tolist()]
    np.testing.assert_allclose(harness.layer.tops[0].data, expected, rtol=1e-13)
    harness.check_gradients()


def test_split_aliases_its_bottom_and_sums_gradients(rng) -> None:
    x = rng.normal(size=(3, 4))
    config = make_config("Split", name="split", bottoms=["x"], tops=["x1", "x2", "x3"])
    harness = LayerHarness(config, {"x": x})
    harness.layer.forward()
    for top in harness.layer.tops:
        np.testing.assert_array_equal(top.data, x)
    grads = harness.gradients()
    np.testing.assert_allclose(grads["x"], sum(harness.upstream.values()), rtol=1e-15)
    harness.check_gradients()


@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_gaussian_recon_loss_is_the_negative_normal_log_density(weight, rng) -> None:
    n = 4
    mu = rng.normal(size=(n, 25))
    sigma = rng.uniform(0.3, 2.0, size=(n, 25))
    x = rng.normal(size=(n, 1, 5, 5))  # images, read flat
    config = make_config("GaussianReconLoss", name="recon",
                         bottoms=["mu", "sigma", "x"], weight=weight)
    harness = LayerHarness(config, {"mu": mu, "sigma": sigma, "x": x},
                           grad_bottoms=("mu", "sigma"))
    expected = -weight / n * norm.logpdf(x.reshape(n, -1), loc=mu, scale=sigma).sum()
    assert harness.objective() == pytest.approx(expected, rel=1e-12)
    harness.check_gradients()


def test_gaussian_recon_loss_sends_no_gradient_into_x(rng) -> None:
    n = 3
    bottoms = {"mu": rng.normal(size=(n, 6)), "sigma": rng.uniform(0.5, 1.5, size=(n, 6)),
               "x": rng.normal(size=(n, 6))}
    config = make_config("GaussianReconLoss", name="recon", bottoms=["mu", "sigma", "x"])
    harness = LayerHarness(config, bottoms)
    sentinel = 7.25
    harness.bottoms["x"].diff[...] = sentinel
    harness.layer.forward()
    harness.layer.backward()
    np.testing.assert_array_equal(harness.bottoms["x"].diff, sentinel)
    assert np.abs(harness.bottoms["mu"].diff).min() > 0


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_gaussian_recon_loss_beta_weights_gradients_by_sigma_to_two_beta(beta, rng) -> None:
    """beta-NLL: the loss is unchanged; each gradient is the beta = 0 one times sigma^(2 beta)."""
    n = 3
    bottoms = {"mu": rng.normal(size=(n, 6)), "sigma": rng.uniform(0.3, 2.0, size=(n, 6)),
               "x": rng.normal(size=(n, 6))}

    def run(beta_value: float):
        config = make_config("GaussianReconLoss", name="recon",
                             bottoms=["mu", "sigma", "x"], beta=beta_value)
        harness = LayerHarness(config, bottoms, grad_bottoms=("mu", "sigma"))
        return harness.objective(), harness.gradients()

    plain_loss, plain = run(0.0)
    beta_loss, weighted = run(beta)
    assert beta_loss == pytest.approx(plain_loss, rel=1e-12)  # summed by a different loop
    for name in ("mu", "sigma"):
        np.testing.assert_allclose(weighted[name], plain[name] * bottoms["sigma"] ** (2 * beta),
                                   rtol=1e-13)


def test_gaussian_recon_loss_mean_sd_fixes_the_means_gradient_only(rng) -> None:
    """mean_sd: dmu is squared error's at that sd, dsigma and the loss are the likelihood's."""
    n, weight, mean_sd = 3, 0.4, 0.25
    bottoms = {"mu": rng.normal(size=(n, 6)), "sigma": rng.uniform(0.3, 2.0, size=(n, 6)),
               "x": rng.normal(size=(n, 6))}

    def run(**options):
        config = make_config("GaussianReconLoss", name="recon",
                             bottoms=["mu", "sigma", "x"], weight=weight, **options)
        harness = LayerHarness(config, bottoms, grad_bottoms=("mu", "sigma"))
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


def kl_closed_form(mu: np.ndarray, sigma: np.ndarray) -> float:
    """KL(N(mu, sigma^2) || N(0, 1)) summed: log(1/sigma) + (sigma^2 + mu^2)/2 - 1/2."""
    return float(np.sum(-np.log(sigma) + (sigma**2 + mu**2) / 2 - 0.5))


def test_gaussian_kl_loss_matches_the_closed_form_and_gradients(rng) -> None:
    n, weight = 5, 0.7
    mu = rng.normal(size=(n, 8))
    sigma = rng.uniform(0.2, 3.0, size=(n, 8))
    config = make_config("GaussianKLLoss", name="kl", bottoms=["mu", "sigma"],
                         weight=weight)
    harness = LayerHarness(config, {"mu": mu, "sigma": sigma})
    assert harness.objective() == pytest.approx(weight / n * kl_closed_form(mu, sigma), rel=1e-12)
    harness.check_gradients()


def test_gaussian_kl_loss_matches_a_monte_carlo_estimate(rng) -> None:
    """E_q[log q(z) - log p(z)] from 200,000 draws per entry; tolerance 5 standard errors."""
    n = 2
    mu = np.array([[0.0, 1.5, -0.7], [0.3, -2.0, 0.0]])
    sigma = np.array([[1.0, 0.5, 2.0], [0.1, 1.3, 0.8]])
    config = make_config("GaussianKLLoss", name="kl", bottoms=["mu", "sigma"])
    loss = LayerHarness(config, {"mu": mu, "sigma": sigma}).objective()

    draws = 200_000
    z = mu + sigma * rng.standard_normal(size=(draws, *mu.shape))
    log_ratio = norm.logpdf(z, loc=mu, scale=sigma) - norm.logpdf(z)
    per_draw = log_ratio.reshape(draws, -1).sum(axis=1) / n
    estimate = per_draw.mean()
    standard_error = per_draw.std(ddof=1) / math.sqrt(draws)
    assert abs(loss - estimate) < 5 * standard_error, (loss, estimate, standard_error)
    assert standard_error < 0.01 * loss


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_square_loss_forward_and_gradients(weight, rng) -> None:
    n = 4
    pred, label = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    config = make_config("SquareLoss", name="sq", bottoms=["pred", "label"], weight=weight)
    harness = LayerHarness(config, {"pred": pred, "label": label})
    assert harness.objective() == pytest.approx(
        weight / n * 0.5 * float(((pred - label) ** 2).sum()), rel=1e-13)
    harness.check_gradients()


@pytest.mark.parametrize("loss_type", ["GaussianReconLoss", "GaussianKLLoss", "SquareLoss"])
def test_losses_reject_mismatched_shapes(loss_type) -> None:
    bottoms = {"a": np.ones((2, 3)), "b": np.ones((2, 4)), "c": np.ones((2, 3))}
    n_bottoms = 3 if loss_type == "GaussianReconLoss" else 2
    names = list(bottoms)[:n_bottoms]
    config = make_config(loss_type, name="loss", bottoms=names)
    with pytest.raises(ConfigError, match="'loss'.*'b'"):
        LayerHarness(config, {k: bottoms[k] for k in names})


def test_concat_joins_along_its_axis_and_splits_gradients(rng) -> None:
    parts = {"a": rng.normal(size=(3, 2, 4)), "b": rng.normal(size=(3, 5, 4))}
    config = make_config("Concat", name="cat", bottoms=["a", "b"], tops=["y"])
    harness = LayerHarness(config, parts)
    harness.layer.forward()
    np.testing.assert_array_equal(harness.layer.tops[0].data,
                                  np.concatenate([parts["a"], parts["b"]], axis=1))
    harness.check_gradients()


def test_concat_rejects_bottoms_that_differ_off_its_axis() -> None:
    config = make_config("Concat", name="cat", bottoms=["a", "b"], tops=["y"])
    with pytest.raises(ConfigError, match="'cat'.*differ off axis 1"):
        LayerHarness(config, {"a": np.zeros((2, 3, 4)), "b": np.zeros((2, 3, 5))})


@pytest.mark.parametrize(("layer_type", "fields"), [
    ("Concat", {"bottoms": ["a", "b"], "tops": ["c"]}),
    ("Slice", {"bottoms": ["a"], "tops": ["c", "d"], "slice_point": [1]}),
])
def test_concat_and_slice_leave_the_batch_axis_alone(layer_type, fields) -> None:
    with pytest.raises(ConfigError, match=f"'{layer_type}'.*axis.*batch"):
        make_config(layer_type, name=layer_type, axis=0, **fields)


def test_slice_cuts_at_its_points_and_an_unread_top_takes_no_gradient(rng) -> None:
    x = rng.normal(size=(4, 9))
    config = make_config("Slice", name="cut", bottoms=["x"], tops=["a", "b", "c"],
                         slice_point=[2, 7])
    harness = LayerHarness(config, {"x": x})
    harness.layer.forward()
    for top, (lo, hi) in zip(harness.layer.tops, [(0, 2), (2, 7), (7, 9)], strict=True):
        np.testing.assert_array_equal(top.data, [row[lo:hi] for row in x.tolist()])
    harness.check_gradients()


@pytest.mark.parametrize("points", [[9], [3, 3], [0, 4], [4, 6, 8]])
def test_slice_rejects_points_that_do_not_cut(points) -> None:
    with pytest.raises(ConfigError, match="'cut'.*slice_point"):
        config = make_config("Slice", name="cut", bottoms=["x"], tops=["a", "b", "c"],
                             slice_point=points)
        LayerHarness(config, {"x": np.zeros((2, 9))})


@pytest.mark.parametrize("neuron", ["Identity", {"type": "Exponential", "cap": 0.5}], ids=str)
def test_contrast_level_scales_each_row_about_its_mean(neuron, rng) -> None:
    x, ab = rng.normal(size=(3, 2, 4)), rng.normal(scale=0.5, size=(3, 2))
    config = make_config("ContrastLevel", name="cl", bottoms=["x", "ab"], tops=["y"],
                         neuron=neuron)
    harness = LayerHarness(config, {"x": x, "ab": ab})
    harness.layer.forward()
    for row, (a, b), got in zip(x.reshape(3, 8), ab, harness.layer.tops[0].data.reshape(3, 8),
                                strict=True):
        mean = sum(row) / len(row)
        expected = [mean + (1 + a) * (v - mean) + b for v in row]
        if neuron != "Identity":
            expected = [math.exp(min(u, 0.5)) for u in expected]
        np.testing.assert_allclose(got, expected, rtol=1e-13)
    harness.check_gradients()


def test_contrast_level_at_zero_is_the_identity_and_checks_its_head(rng) -> None:
    x = rng.normal(size=(3, 5))
    config = make_config("ContrastLevel", name="cl", bottoms=["x", "ab"], tops=["y"])
    harness = LayerHarness(config, {"x": x, "ab": np.zeros((3, 2))})
    harness.layer.forward()
    np.testing.assert_allclose(harness.layer.tops[0].data, x, rtol=1e-15)
    with pytest.raises(ConfigError, match="'cl'.*'ab' must be \\(N, 2\\)"):
        LayerHarness(config, {"x": x, "ab": np.zeros((3, 3))})


def _noise_level(images: np.ndarray, **fields) -> np.ndarray:
    config = make_config("NoiseLevel", name="noise", bottoms=["x"], tops=["y"], **fields)
    harness = LayerHarness(config, {"x": images}, grad_bottoms=())
    harness.layer.forward()
    return harness.layer.tops[0].data[:, 0]


def test_noise_level_recovers_the_sd_of_white_noise_under_smooth_light(rng) -> None:
    sd = np.array([1e-3, 1e-2, 0.3])
    yy, xx = np.mgrid[:128, :128] - 63.5
    light = np.exp(-(xx**2 + yy**2) / (2 * 20.0**2))  # a smooth "galaxy", 5 sd at its peak
    images = sd[:, None, None, None] * (5 * light + rng.normal(size=(3, 2, 128, 128)))
    np.testing.assert_allclose(np.exp(_noise_level(images)), sd, rtol=0.03)


def test_noise_level_ignores_a_few_sharp_edges(rng) -> None:
    images = 0.01 * rng.normal(size=(2, 1, 64, 64))
    images[:, :, :, 32:] += 5.0  # a step in every row: 64 huge differences among 4032
    np.testing.assert_allclose(np.exp(_noise_level(images)), 0.01, rtol=0.05)


def test_noise_level_is_the_clipped_mean_difference_written_out(rng) -> None:
    images = rng.normal(size=(3, 2, 3, 5)) * rng.choice([1.0, 20.0], size=(3, 2, 3, 5), p=[.9, .1])
    got = _noise_level(images)
    # E|d| clipped at 3 E|d| for d ~ N(0, 2), by numerical integration of the half-normal density
    t = np.linspace(0, 3 * 2 / math.sqrt(math.pi), 200_001)
    density = np.exp(-t**2 / 4) / math.sqrt(math.pi)
    calibration = np.trapezoid(t * density, t) / np.trapezoid(density, t)
    for image, value in zip(images, got, strict=True):
        diffs = [abs(row[c + 1] - row[c]) for band in image for row in band for c in range(4)]
        mean = sum(diffs) / len(diffs)
        kept = [d for d in diffs if d < 3 * mean]
        assert value == pytest.approx(math.log(sum(kept) / len(kept) / calibration), rel=1e-9)


def test_noise_level_with_a_huge_clip_is_the_plain_mean_difference(rng) -> None:
    images = rng.normal(size=(2, 1, 6, 9)) * rng.choice([1.0, 50.0], size=(2, 1, 6, 9), p=[.9, .1])
    plain = np.abs(np.diff(images, axis=-1)).reshape(2, -1).mean(axis=1)
    got = _noise_level(images, clip=1e30)  # E|d| = 2 sigma / sqrt(pi) for white noise
    np.testing.assert_allclose(got, np.log(plain * math.sqrt(math.pi) / 2), rtol=1e-12)


def test_noise_level_with_a_lag_differences_pixels_that_far_apart(rng) -> None:
    white = rng.normal(size=(400, 400))
    correlated = (white + np.roll(white, 1, axis=1)) / math.sqrt(2)  # sd 1, neighbours at 0.5
    images = 0.02 * correlated[None, None]
    got = [math.exp(_noise_level(images, lag=lag)[0]) for lag in (1, 2)]
    assert got[0] == pytest.approx(0.02 * math.sqrt(0.5), rel=0.02)  # sees half the variance
    assert got[1] == pytest.approx(0.02, rel=0.02)  # past the correlation: all of it
    plain = np.abs(images[..., 3:] - images[..., :-3]).mean()
    assert _noise_level(images, clip=1e30, lag=3)[0] == pytest.approx(
        math.log(plain * math.sqrt(math.pi) / 2), rel=1e-9)


def test_noise_level_of_a_flat_image_is_the_floor() -> None:
    got = _noise_level(np.full((2, 1, 4, 4), 0.5), floor=1e-4)
    np.testing.assert_allclose(got, math.log(1e-4))


def test_noise_level_needs_images_and_takes_no_gradient() -> None:
    config = make_config("NoiseLevel", name="noise", bottoms=["x"], tops=["y"])
    assert not config.can_do_bp and not config.has_param
    with pytest.raises(ConfigError, match="'noise'.*images"):
        LayerHarness(config, {"x": np.zeros((2, 16))})
    with pytest.raises(ConfigError, match="'noise'.*lag = 4"):
        LayerHarness(make_config("NoiseLevel", name="noise", bottoms=["x"],
                                 tops=["y"], lag=4), {"x": np.zeros((2, 1, 4, 4))})
    for field in ("floor", "clip", "lag"):
        with pytest.raises(ConfigError, match=f"'noise'.*{field}"):
            make_config("NoiseLevel", name="noise", bottoms=["x"], tops=["y"], **{field: 0})
