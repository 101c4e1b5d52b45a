"""Every figure writes a real, non-blank PNG from galaxy-like arrays."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from matplotlib.image import imread

from galaxy_model import figures
from mochapy.errors import DataError

SIZE = 32


def blobs(count: int, bands: int = 1, seed: int = 0) -> np.ndarray:
    """Elliptical Gaussian galaxies with a companion and noise, (count, bands, SIZE, SIZE)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:SIZE, :SIZE]
    images = np.empty((count, bands, SIZE, SIZE))
    for i in range(count):
        angle, width, ratio = rng.uniform(0, np.pi), rng.uniform(2, 6), rng.uniform(0.3, 1)
        dx, dy = columns - 16 - rng.normal(0, 2), rows - 16 - rng.normal(0, 2)
        u = (np.cos(angle) * dx + np.sin(angle) * dy) / width
        v = (-np.sin(angle) * dx + np.cos(angle) * dy) / (width * ratio)
        galaxy = np.exp(-0.5 * (u * u + v * v)) + 0.3 * np.exp(-((dx - 9) ** 2 + dy**2) / 3)
        colour = rng.uniform(0.5, 1.0, size=(bands, 1, 1))
        images[i] = colour * galaxy + rng.normal(0, 0.02, (bands, SIZE, SIZE))
    return images


def assert_real_png(path, min_height=150, min_width=150, min_std=0.05) -> np.ndarray:
    assert path.stat().st_size > 2000
    image = imread(path)
    assert image.shape[0] >= min_height and image.shape[1] >= min_width
    rgb = image[..., :3]
    assert rgb.std() > min_std and np.ptp(rgb) > 0.5  # not a blank canvas
    return rgb


@pytest.mark.parametrize("bands", [1, 3])
def test_conditionals(tmp_path, bands):
    x = blobs(4, bands)
    f_mu = x + 0.01
    f_sd = 0.02 + 0.1 * np.abs(x)
    out = tmp_path / "figs" / "conditionals.png"
    assert figures.plot_conditionals(x, f_mu, f_sd, out) == out
    rgb = assert_real_png(out, min_height=4 * 150)
    if bands == 3:
        assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 0.1  # coloured, not grey
    assert not list(out.parent.glob(".*.tmp"))  # no temporary file left behind


def test_embedding_is_deterministic_and_caps_thumbnails(tmp_path):
    thumbnails = blobs(40, 3)
    z_mu = np.random.default_rng(1).normal(size=(40, 8))
    first = figures.plot_embedding(z_mu, thumbnails, tmp_path / "a.png", seed=0, max_points=10)
    second = figures.plot_embedding(z_mu, thumbnails, tmp_path / "b.png", seed=0, max_points=10)
    assert first.shape == (40, 2)
    np.testing.assert_array_equal(first, second)
    # Mostly dark sky with ten thumbnails: less spread than the panel figures.
    rgb = assert_real_png(tmp_path / "a.png", min_height=800, min_width=800, min_std=0.02)
    assert np.median(rgb) < 0.1  # a dark background, as on the poster
    assert len(figures._spread_out(first, 1e-9, 10, seed=0)) == 10
    with pytest.raises(DataError, match="thumbnails"):
        figures.plot_embedding(z_mu, thumbnails[:5], tmp_path / "c.png")


def test_traversals(tmp_path):
    steps = [-2, -1, 0, 1, 2]
    grid = blobs(3 * len(steps)).reshape(3, len(steps), 1, SIZE, SIZE)
    figures.plot_traversals(grid, tmp_path / "traversals.png", steps)
    assert_real_png(tmp_path / "traversals.png")
    with pytest.raises(DataError, match="steps"):
        figures.plot_traversals(grid, tmp_path / "bad.png", [-1, 0, 1])


def test_training_curves_from_a_statistics_file(tmp_path):
    iterations = np.arange(0, 2000, 10, dtype=float)
    path = tmp_path / "statistics.h5"
    with h5py.File(path, "w") as handle:
        handle["train/loss"] = np.column_stack([iterations, 1e4 * np.exp(-iterations / 100) - 500])
        handle["validation/loss"] = np.column_stack([iterations[::20], -480 + 0 * iterations[::20]])
        handle["train/kl"] = np.column_stack([iterations, 20 + np.exp(-iterations / 300)])
        handle["notes"] = np.arange(3)  # not a (K, 2) statistic: ignored
    stats = figures.read_statistics(path)
    assert sorted(stats) == ["train/kl", "train/loss", "validation/loss"]
    np.testing.assert_array_equal(stats["train/kl"][:, 0], iterations)
    figures.plot_training_curves(stats, tmp_path / "curves.png")
    assert_real_png(tmp_path / "curves.png")
    with pytest.raises(DataError, match="no such statistics file"):
        figures.read_statistics(tmp_path / "missing.h5")


def test_each_phase_keeps_its_colour_in_every_panel():
    series = np.zeros((3, 2))
    panels = {"loss": [("mean/train", series), ("mean/validation", series), ("sd/train", series)],
              "learning_rate": [("mean/train", series), ("sd/train", series)]}
    colours = figures.phase_colours(panels)
    assert colours == {"mean/train": "C0", "mean/validation": "C1", "sd/train": "C2"}


def test_residual_comparison(tmp_path):
    x = blobs(8)
    recon_mu = x * 0.95
    baseline_model = x[:, 0] * 0.5  # (N, H, W), as fit_gaussian2d returns for one band
    figures.plot_residual_comparison(x, recon_mu, baseline_model, tmp_path / "resid.png", k=3)
    assert_real_png(tmp_path / "resid.png", min_height=3 * 150, min_width=5 * 150)


def test_display_stretch():
    images = blobs(2, 3)
    sky, scale = figures.display_limits(images)
    assert sky.shape == (3,) and scale > 0
    rgb = figures.to_display(images, sky, scale)
    assert rgb.shape == (2, SIZE, SIZE, 3) and rgb.min() >= 0 and rgb.max() <= 1
    only_first_band = np.zeros_like(images)
    only_first_band[:, 0] = images[:, 0]
    shown = figures.to_display(only_first_band, np.zeros(3), scale)
    assert shown[..., 0].max() > 0.5 and shown[..., 2].max() == 0  # band 0 (reddest) shown red
    grey = figures.to_display(images[:, :1], sky[:1], scale)
    assert grey.shape == (2, SIZE, SIZE)
