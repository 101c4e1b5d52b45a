"""The Hubble XDF real split: bundled image, deterministic selection of resolved galaxies."""

from __future__ import annotations

import re

import numpy as np
import pytest

from galaxy_model import stamps
from galaxy_model.hubble import KEPT_RANGE, LABEL, build_real_split, hubble_image

# (x, y) of the field's bright stars (white saturated cores with diffraction spikes)
STARS = [(253, 166), (147, 217), (754, 578), (655, 595)]


@pytest.fixture(scope="module")
def grey():
    return build_real_split()


@pytest.fixture(scope="module")
def colour():
    return build_real_split(bands=3)


def positions(ds):
    pattern = re.compile(r"hubble_xdf x=([\d.]+) y=([\d.]+)")
    return np.array([[float(v) for v in pattern.fullmatch(p).groups()] for p in ds.provenance])


def test_bundled_image_loads_offline():
    image = hubble_image()
    assert image.shape == (3, 872, 1000) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1


def test_real_split_is_finite_non_trivial_and_sized_as_measured(grey):
    assert KEPT_RANGE[0] <= len(grey) <= KEPT_RANGE[1]
    assert grey.data.shape[1:] == (1, 69, 69) and grey.data.dtype == np.float32
    assert np.isfinite(grey.data).all() and (grey.scale > 0).all()
    assert grey.mask is None  # every stamp lies inside the image
    centre = grey.data[:, 0, 30:39, 30:39].mean(axis=(1, 2))
    border = np.abs(stamps.border_pixels(grey.data[:, 0])).mean(axis=1)
    assert np.median(centre) > 0.3 and np.median(border) < 0.05  # a galaxy on sky, centred
    assert grey.data.reshape(len(grey), -1).std(axis=1).min() > 0.01
    assert grey.attrs["label"] == LABEL and grey.attrs["n_stars"] == len(STARS)
    assert grey.attrs["stamp_side_in_r50"] == stamps.STAMP_SIDE_IN_R50


def test_stars_and_unresolved_sources_are_not_kept(grey):
    found = positions(grey)
    for star in STARS:
        assert np.hypot(*(found - star).T).min() > 5, star
    _, r50 = stamps.measure(grey.data[:, 0])
    assert np.median(r50) == pytest.approx(69 / stamps.STAMP_SIDE_IN_R50, rel=0.2)


def test_three_bands_are_the_same_galaxies_and_average_to_the_grey_split(grey, colour):
    assert colour.provenance == grey.provenance
    assert colour.data.shape == (len(grey), 3, 69, 69)
    # cutting is linear, so the mean of the RGB stamps in raw units is the grey stamp
    rows = np.arange(0, len(grey), 17)
    assert np.allclose(colour.denormalise(rows).mean(axis=1), grey.denormalise(rows)[:, 0],
                       atol=2e-4)


def test_deterministic(grey):
    again = build_real_split()
    assert again.provenance == grey.provenance and np.array_equal(again.data, grey.data)
