"""Populations: synth-v1 unchanged bit for bit, gz-v1 deterministic and within its published
statistics, the gz splits registered, sensitivity variants well-formed."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from galaxy_model import builtin, population_check, synth
from galaxy_model.populations import GZ_V1, SYNTH_V1, LogUniform, PowerLaw, vary


def _digest(dataset, names=("data", "ivar", "mask", "scale", "offset")) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(np.ascontiguousarray(getattr(dataset, name)).tobytes())
    return digest.hexdigest()


# The pixels (data, mask, scale, offset) recorded before populations existed (commit de4d7bc; the
# digests of these four alone taken before ivar-v2), so builtin:train/valid/heldout and every run
# trained on them stay exactly what they were. ivar has its own digest: ivar-v2's.
@pytest.mark.parametrize(("n", "seed", "bands", "pixels", "ivar"), [
    (260, 2, 1, "3787c0feeeeb33600130b555391cd29a4cc0d10980cf8791f6686ba0fa5851ce",
     "f39bf6525bed89bc67f0ee6e774fe64e5cf20312ebf1a6502ad4712d612a1370"),
    (30, 5, 3, "7dce437e92156b04469193c307605cc2dccdc6a4f79fc40eec3c7b03007566a6",
     "99aa6a16b745b2cfc610ad82fb6e346fd4f6dd2814d17e59c0d01a24a24e9b25"),
])
def test_the_original_population_renders_bit_for_bit_as_before(n, seed, bands, pixels,
                                                               ivar) -> None:
    dataset = synth.synthesize(n, seed=seed, bands=bands, workers=1)
    assert _digest(dataset, ("data", "mask", "scale", "offset")) == pixels
    assert _digest(dataset, ("ivar",)) == ivar


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
    assert heldout.attrs["generator_version"] == "gz-v1+ivar-v2"
    assert (tmp_path / "gz-heldout-gz-v1+ivar-v2-n3-seed13.h5").is_file()
