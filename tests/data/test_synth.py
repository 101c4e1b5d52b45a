"""The synthetic galaxy generator: determinism, independence of chunks, realism, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from galaxy_model import stamps, synth
from galaxy_model.baseline import fit_gaussian2d
from galaxy_model.cli import main
from galaxy_model.dataset import read_dataset
from galaxy_model.populations import GZ_V1
from galaxy_model.synth import photograph

FIELDS = ("data", "ivar", "mask", "scale", "offset")


def assert_same(a, b) -> None:
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.provenance == b.provenance


@pytest.fixture(scope="module")
def sample():
    return synth.synthesize(40, seed=3)


def test_the_same_seed_gives_the_same_images_and_another_seed_others(sample) -> None:
    assert_same(synth.synthesize(40, seed=3), sample)
    other = synth.synthesize(40, seed=4)
    assert not np.allclose(other.data, sample.data)
    assert sample.provenance[7] == "synth seed=3 index=7"


def test_chunks_depend_only_on_seed_and_index(monkeypatch) -> None:
    monkeypatch.setattr(synth.generate, "CHUNK_SIZE", 4)  # where chunks are cut
    whole = synth.synthesize(16, seed=9, workers=1)
    alone = synth.render_chunk(9, 2)  # images 8..11, rendered by themselves
    for name, part in zip(FIELDS, alone, strict=True):
        assert np.array_equal(part, getattr(whole, name)[8:12]), name
    assert_same(synth.synthesize(6, seed=9), whole.subset(slice(0, 6)))  # a prefix
    assert_same(synth.synthesize(16, seed=9, workers=2), whole)  # two processes


def test_images_are_finite_normalised_and_well_above_the_noise(sample) -> None:
    data, ivar, mask = sample.data, sample.ivar, sample.mask.astype(bool)
    assert data.shape == (40, 1, 69, 69) and data.dtype == np.float32
    assert np.isfinite(data).all() and np.isfinite(ivar).all()
    assert (ivar[~mask] > 0).all() and (ivar[mask] == 0).all()
    per_image = data.reshape(40, -1)
    assert np.allclose(np.percentile(per_image, stamps.SCALE_PERCENTILE, axis=1), 1, atol=1e-3)
    border = stamps.border_pixels(data[:, 0])
    sky_sigma = 1.4826 * np.median(np.abs(border), axis=1)
    contrast = per_image.std(axis=1) / sky_sigma
    assert contrast.min() > 1.25 and np.median(contrast) > 5  # galaxies, not noise
    assert np.abs(np.median(border, axis=1)).max() < 1e-6  # sky at 0
    assert np.allclose(sample.denormalise(0).min(), 0, atol=0.1)  # raw: display values


def test_noise_in_the_sky_matches_ivar(sample) -> None:
    border = stamps.border_pixels(sample.data[:, 0])
    robust_sigma = 1.4826 * np.median(np.abs(border), axis=1)
    border_ivar = stamps.border_pixels(sample.ivar[:, 0])
    predicted = np.array([np.median(1 / np.sqrt(v[v > 0])) for v in border_ivar])
    # Faint neighbours in the border widen the spread a little, the stretch narrows it a little.
    assert 0.8 < np.median(robust_sigma / predicted) < 1.3


@pytest.fixture(scope="module")
def noise_draws():
    """Four gz scenes (two with most of their sky clipped at black) photographed 300 times."""
    count, draws = 4, 300
    central, field, observation = synth.draw_scenes(3, 0, 1, GZ_V1, count)
    exposure = photograph.expose(central, field, observation, np.ones(count), 1)
    rng = np.random.default_rng(0)
    shots = np.stack([photograph.develop(exposure, rng.standard_normal(
        exposure.signal.shape, np.float32))[0] for _ in range(draws)])
    return observation, exposure, photograph.display_variance(exposure), shots


def test_ivar_is_the_variance_of_the_stamp_pixels_over_the_noise(noise_draws) -> None:
    """ivar as the generator makes it (on a fixed 66-pixel stamp) against the variance of the
    same stamp over 300 noise draws, pooled over each image's unmasked pixels."""
    observation, exposure, variance, shots = noise_draws
    count, size = len(variance), stamps.STAMP_SIZE
    display, saturated = photograph.develop(exposure, observation.noise)
    centres, r50 = np.full((count, 2), (synth.CANVAS - 1) / 2), np.full(count, 6.0)
    _, ivar, mask, scale, _ = photograph.to_stamp(display, variance, saturated, centres, r50, size)
    cut = stamps.cutout(shots.reshape(-1, 1, synth.CANVAS, synth.CANVAS),
                        np.tile(centres, (len(shots), 1)), np.tile(r50, len(shots)), size)
    measured = cut.reshape(len(shots), count, size, size).var(axis=0, ddof=1)
    for image in range(count):
        keep = mask[image, 0] == 0
        predicted = scale[image] ** 2 / ivar[image, 0][keep]
        assert measured[image][keep].sum() / predicted.sum() == pytest.approx(1, abs=0.03)


def test_the_variance_holds_at_the_clip_and_in_the_galaxy(noise_draws) -> None:
    """Canvas pixels: the sky where a fifth or more of the draws are black, and the galaxy where
    the stretch compresses. ivar-v1's linearised stretch, blind to the clip, fails the same
    check (it overstated the clipped sky's variance 1.7-2 x)."""
    _, exposure, variance, shots = noise_draws
    measured = shots.var(axis=0, ddof=1)
    at_clip = (shots == 0).mean(axis=0) > 0.2
    stretched = np.arcsinh(exposure.signal / exposure.softening) / exposure.stretch
    noiseless = synth.DISPLAY_SKY + stretched
    galaxy = (noiseless > 0.3) & (noiseless < 0.95)
    assert at_clip.sum() > 10_000 and galaxy.sum() > 200
    for region in (at_clip, galaxy):
        assert measured[region].sum() / variance[region].sum() == pytest.approx(1, abs=0.03)
    linearised = exposure.variance / ((exposure.softening**2 + exposure.signal**2)
                                      * exposure.stretch**2) + 1 / (12 * synth.DISPLAY_LEVELS**2)
    assert measured[at_clip].sum() / linearised[at_clip].sum() < 0.7


def test_the_variance_table_matches_direct_quadrature(noise_draws) -> None:
    """The interpolated table against the quadrature done for every pixel (unsaturated)."""
    _, exposure, variance, _ = noise_draws
    signal = exposure.signal.astype(np.float64)
    background = (exposure.sky + exposure.read_variance).astype(np.float64) + 1 / 12
    softening, stretch = exposure.softening.astype(np.float64), exposure.stretch.astype(np.float64)
    white = softening * np.sinh((1 - synth.DISPLAY_SKY) * stretch)
    direct = photograph._clipped_variance(signal, np.sqrt(signal + background), softening,
                                          stretch, white)
    below = signal < white
    assert np.abs(variance[below] / direct[below] - 1).max() < 2e-3


def test_a_single_gaussian_misfits_the_galaxies_as_it_misfits_real_ones() -> None:
    """Measured: median Gaussian-fit MSE 6.3e-3 on these 100 images (seed 11; seeds 12, 13:
    5.9e-3, 4.7e-3), 5.5e-3 on the 1000 heldout images; the Hubble XDF real split gives 6.6e-3,
    a plain bulge+disc generator gave 1.3e-3.
    """
    data = synth.synthesize(100, seed=11).data[:, 0]
    mse = fit_gaussian2d(data).mse
    assert 3.5e-3 < np.median(mse) < 1.0e-2
    assert np.percentile(mse, 10) > 3e-4  # measured 7e-4: even the smoothest are not Gaussians


def test_three_bands_have_varied_colours() -> None:
    colour = synth.synthesize(30, seed=5, bands=3)
    assert colour.data.shape == (30, 3, 69, 69) and colour.offset.shape == (30, 3)
    assert colour.attrs["band_names"] == "i,r,g"  # red first, like a JPEG's R, G, B
    centre = colour.denormalise(slice(None))[:, :, 30:39, 30:39].sum(axis=(2, 3))
    log_g_over_i = np.log(centre[:, 2] / centre[:, 0])
    assert log_g_over_i.std() > 0.03  # red bulges and blue discs mix differently per galaxy
    assert np.median(log_g_over_i) < 0  # bulges, bars and discs send more light in i than g


def test_attributes_describe_the_data(sample) -> None:
    attrs = sample.attrs
    assert attrs["generator_version"] == synth.GENERATOR_VERSION == "synth-v1+ivar-v2"
    assert attrs["ivar_version"] == synth.IVAR_VERSION == "ivar-v2" and attrs["seed"] == 3
    assert attrs["normalisation"] == stamps.NORMALISATION_DESCRIPTION
    assert attrs["size"] == 69 and attrs["bands"] == 1 and attrs["stamp_side_in_r50"] == 11.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="bands"):
        synth.synthesize(2, bands=2)
    with pytest.raises(ValueError, match="at least 1"):
        synth.synthesize(0)


def test_synth_command_writes_the_dataset_and_one_summary_line(tmp_path) -> None:
    out = tmp_path / "galaxies.h5"
    result = CliRunner().invoke(main, ["synth", "--n", "3", "--out", str(out), "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1
    assert "wrote 3 synthetic galaxies" in result.output and str(out) in result.output
    assert_same(read_dataset(out), synth.synthesize(3, seed=5))


def test_synth_command_reports_errors_in_one_line(tmp_path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(main, ["synth", "--n", "2", "--out", str(blocker / "x.h5")])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert result.output.count("\n") == 1
    result = CliRunner().invoke(main, ["synth", "--n", "2", "--out", "x.h5", "--bands", "2"])
    assert result.exit_code == 2
