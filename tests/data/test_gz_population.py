"""Populations: synth-v1 unchanged bit for bit, gz-v1 deterministic and within its published
statistics, the gz splits registered, sensitivity variants well-formed."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from galaxy_model import builtin, population_check, synth
from galaxy_model.populations import GZ_V1, SYNTH_V1, LogUniform, PowerLaw, vary


def _digest(dataset) -> str:
    digest = hashlib.sha256()
    for array in (dataset.data, dataset.ivar, dataset.mask, dataset.scale, dataset.offset):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# Recorded before populations existed (commit de4d7bc), so builtin:train/valid/heldout and every
# run trained on them stay exactly what they were.
@pytest.mark.parametrize(("n", "seed", "bands", "expected"), [
    (260, 2, 1, "395ab564003c864e1d4c14494d321cfd6380542ec691a374fc0b5e72fda55caa"),
    (30, 5, 3, "9a75fdb17e29d4aa84af2a0d954b9e57cc1d37fc6aa025333f7d2b591021342d"),
])
def test_the_original_population_renders_bit_for_bit_as_before(n, seed, bands, expected) -> None:
    assert _digest(synth.synthesize(n, seed=seed, bands=bands, workers=1)) == expected


def test_gz_images_are_deterministic_by_seed_and_record_their_population() -> None:
    first = synth.synthesize(12, seed=7, population=GZ_V1, workers=1)
    again = synth.synthesize(12, seed=7, population=GZ_V1, workers=1)
    other = synth.synthesize(12, seed=8, population=GZ_V1, workers=1)
    original = synth.synthesize(12, seed=7, workers=1)
    assert _digest(first) == _digest(again)
    assert _digest(first) != _digest(other) and _digest(first) != _digest(original)
    assert np.isfinite(first.data).all() and first.data.shape == (12, 1, 69, 69)
    assert first.attrs["population_version"] == "gz-v1"
    assert json.loads(first.attrs["population"])["neighbour_rate"] == GZ_V1.neighbour_rate


def test_gz_population_matches_the_published_statistics_within_tolerance() -> None:
    rows, unchecked = population_check.compare(GZ_V1, 3000, seed=11)
    outside = [f"{r.name}: {r.measured:.4g} vs {r.published:.4g} +- {r.tolerance:.3g}"
               for r in rows if not r.within]
    assert not outside
    assert set(unchecked) == {"elliptical share", "lenticular share", "spiral share",
                              "irregular share"}


def test_the_original_population_is_not_gz_like() -> None:
    """The check can fail: synth-v1's busy fields and bright S/N are far from the SDSS values."""
    rows, _ = population_check.compare(SYNTH_V1, 1000, seed=11)
    failed = {row.name for row in rows if not row.within}
    assert {"merger fraction", "neighbours (3-120 % flux) per canvas",
            "median S/N within 2 r50"} <= failed


def test_scene_parameters_are_those_of_the_rendered_scenes() -> None:
    """The first images of a longer request are the same scenes (chunk streams by index)."""
    short = synth.scene_parameters(10, seed=3, population=GZ_V1)
    long = synth.scene_parameters(300, seed=3, population=GZ_V1)
    for key, values in short.items():
        np.testing.assert_array_equal(values, long[key][:10])


def test_distributions_draw_within_their_bounds_and_scale() -> None:
    rng = np.random.default_rng(0)
    power = PowerLaw(0.03, 1.2, -2.15)
    values = power.draw(rng, 20000)
    assert values.min() >= 0.03 and values.max() <= 1.2
    assert abs(np.median(values) - power.median()) < 0.05 * power.median()
    assert LogUniform(1, 4).scaled(2) == LogUniform(2, 8)
    assert GZ_V1.signal_to_noise.scaled(0.5).median() == pytest.approx(
        GZ_V1.signal_to_noise.median() / 2)


def test_variants_change_one_field_under_a_new_version() -> None:
    variant = vary(GZ_V1, "gz-v1-no-neighbours", {"neighbour_rate": 0})
    assert variant.neighbour_rate == 0 and variant.version == "gz-v1-no-neighbours"
    assert variant.star_rate == GZ_V1.star_rate
    doubled = vary(GZ_V1, "gz-v1-psf-x2", {"psf_fwhm_in_r50": {"times": 2}})
    assert doubled.psf_fwhm_in_r50.median() == pytest.approx(2 * GZ_V1.psf_fwhm_in_r50.median())
    with pytest.raises(ValueError, match="unknown population field 'neighbours'"):
        vary(GZ_V1, "bad", {"neighbours": 0})
    with pytest.raises(ValueError, match="sum to 1"):
        vary(GZ_V1, "bad", {"morphology_shares": [0.5, 0.5, 0.5, 0, 0]})


def test_gz_splits_are_registered_with_their_population(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GALAXY_MODEL_CACHE", str(tmp_path))
    monkeypatch.setenv("GALAXY_MODEL_BUILTIN_SIZES", "gz-heldout=3")
    assert builtin.SYNTHETIC_SPLITS["gz-train"].n == 43_444
    assert {builtin.SYNTHETIC_SPLITS[name].population for name in
            ("gz-train", "gz-valid", "gz-heldout")} == {GZ_V1}
    heldout = builtin.load("builtin:gz-heldout")
    assert len(heldout) == 3 and heldout.attrs["population_version"] == "gz-v1"
    assert (tmp_path / "gz-heldout-gz-v1-n3-seed13.h5").is_file()
