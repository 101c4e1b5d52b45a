"""The poster's figures, drawn from arrays and written as PNG (matplotlib's Agg canvas).

Images are (K, C, H, W) with C = 1 (shown grey) or C = 3 (shown as RGB: bands are stored red
first, as the R, G, B planes of a JPEG and the synthetic set's i, r, g). Brightness goes through
an asinh stretch, which shows a galaxy's faint outskirts and its bright core in one image: black
at the sky level (the median of the image border), full scale at the 99.8th percentile. Nothing
here needs the net: the caller passes the arrays the trained model produced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.manifold import TSNE

from mochapy.atomic import write_atomically
from mochapy.errors import DataError

ASINH_SOFTENING = 10.0  # asinh(Q t) / asinh(Q): larger Q lifts faint structure more
WHITE_PERCENTILE = 99.8
PANEL_INCHES = 1.9
DPI = 110
DARK = "#0b0b12"
# Share of each embedding axis that one thumbnail spans, and how close two may come (in units
# of a thumbnail) before the later one is skipped.
THUMBNAIL_FRACTION = 0.055
THUMBNAIL_MIN_SEPARATION = 0.85
# Curves skip this leading share of iterations when choosing y-limits: the first few losses are
# orders of magnitude above the rest and would flatten the part worth reading.
CURVE_TRANSIENT_FRACTION = 0.05


def _as_images(name: str, array: np.ndarray, leading_dims: int = 1) -> np.ndarray:
    """array as float64 (..., C, H, W) with C in {1, 3}; a missing band axis becomes C = 1."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == leading_dims + 2:
        array = np.expand_dims(array, axis=leading_dims)
    if array.ndim != leading_dims + 3 or array.shape[leading_dims] not in (1, 3):
        raise DataError(
            f"{name}: expected images (..., C, H, W) with C = 1 or 3, got {array.shape}"
        )
    if array.size == 0:
        raise DataError(f"{name}: no images")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{name}: contains NaN or Inf")
    return array


def _same_shape(name: str, array: np.ndarray, like: np.ndarray) -> np.ndarray:
    """array as images shaped exactly like `like` (a band axis of 1 may be missing)."""
    array = np.asarray(array, dtype=np.float64)
    if array.size != like.size:
        raise DataError(f"{name}: shape {array.shape} does not match x's {like.shape}")
    return _as_images(name, array.reshape(like.shape))


def display_limits(images: np.ndarray) -> tuple[np.ndarray, float]:
    """(sky level per band (C,), scale): the stretch that a set of (K, C, H, W) images shares."""
    border = np.concatenate(
        [images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]],
        axis=-1,
    )
    sky = np.median(np.moveaxis(border, -2, 0).reshape(images.shape[-3], -1), axis=1)
    above_sky = images - sky[:, None, None]
    scale = float(np.percentile(above_sky, WHITE_PERCENTILE))
    if not scale > 0:
        scale = float(np.max(np.abs(above_sky))) or 1.0
    return sky, scale


def to_display(images: np.ndarray, sky: np.ndarray, scale: float) -> np.ndarray:
    """(K, C, H, W) -> asinh-stretched (K, H, W) grey or (K, H, W, 3) RGB, in [0, 1].

    Colour (bands stored red first, e.g. i, r, g) follows the SDSS / Galaxy Zoo convention:
    astropy.visualization.make_lupton_rgb's asinh stretch of the summed intensity, which keeps
    each pixel's colour where a per-band stretch would wash bright cores out to white."""
    t = np.clip((images - sky[:, None, None]) / scale, 0.0, None)
    if t.shape[-3] == 3:
        return lupton_rgb(t)
    stretched = np.clip(np.arcsinh(ASINH_SOFTENING * t) / np.arcsinh(ASINH_SOFTENING), 0.0, 1.0)
    return stretched[..., 0, :, :]


def lupton_rgb(intensity: np.ndarray) -> np.ndarray:
    """(..., 3, H, W) sky-subtracted intensities, white near 1 -> (..., H, W, 3) RGB in [0, 1]."""
    from astropy.visualization import make_lupton_rgb

    flat = intensity.reshape(-1, *intensity.shape[-3:])
    # asinh(Q I / stretch) / Q with Q / stretch = ASINH_SOFTENING and Q = asinh(ASINH_SOFTENING):
    # the grey stretch's curve, white at I = 1
    softening = float(np.arcsinh(ASINH_SOFTENING))
    with np.errstate(invalid="ignore", divide="ignore"):  # black pixels: 0 / 0 inside astropy
        rgb = np.stack([
            make_lupton_rgb(image[0], image[1], image[2], minimum=0.0,
                            stretch=softening / ASINH_SOFTENING, Q=softening) / 255.0
            for image in flat
        ])
    return rgb.reshape(*intensity.shape[:-3], *intensity.shape[-2:], 3)


def _show(ax, display_image: np.ndarray, **kwargs):
    """imshow with the galaxy conventions: row 0 at the top, no ticks, grey for one band."""
    image = ax.imshow(
        display_image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", **kwargs
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def _band_mean(images: np.ndarray) -> np.ndarray:
    """(..., C, H, W) -> (..., H, W): maps that need one value per pixel (σ, residuals)."""
    return images.mean(axis=-3)


def _save(figure: Figure, out_png: str | os.PathLike) -> Path:
    """Render with Agg and write the PNG atomically (temporary file, fsync, rename)."""
    path = Path(out_png)
    FigureCanvasAgg(figure)
    write_atomically(str(path), lambda temporary: figure.savefig(
        temporary, format="png", dpi=DPI, facecolor=figure.get_facecolor()))
    return path


def plot_conditionals(
    x: np.ndarray, f_mu: np.ndarray, f_sd: np.ndarray, out_png: str | os.PathLike
) -> Path:
    """The poster's "sample conditional distributions": rows of x, f_mu(z), f_sigma(z), z ~ q(z|x).

    x and f_mu share one stretch per row, so their brightness compares directly; f_sigma has its
    own colour scale and colour bar per row (averaged over bands for three-band images).
    """
    x = _as_images("x", x)
    f_mu = _same_shape("f_mu", f_mu, x)
    f_sd = _same_shape("f_sd", f_sd, x)
    rows = len(x)
    figure = Figure(figsize=(3.35 * PANEL_INCHES, rows * PANEL_INCHES + 0.4), layout="constrained")
    axes = figure.subplots(rows, 3, squeeze=False)
    titles = (r"input $x$", r"$f_\mu(z),\ z \sim q(z\,|\,x)$", r"$f_\sigma(z)$")
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=10)
    for row in range(rows):
        sky, scale = display_limits(np.stack([x[row], f_mu[row]]))
        _show(axes[row, 0], to_display(x[row], sky, scale))
        _show(axes[row, 1], to_display(f_mu[row], sky, scale))
        sigma_image = axes[row, 2].imshow(
            _band_mean(f_sd[row]), cmap="magma", interpolation="nearest"
        )
        axes[row, 2].set_xticks([])
        axes[row, 2].set_yticks([])
        figure.colorbar(sigma_image, ax=axes[row, 2], fraction=0.046, pad=0.03)
    return _save(figure, out_png)


def _tsne(z_mu: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of the latent means, deterministic given the seed (PCA initialisation)."""
    n = len(z_mu)
    # sklearn needs perplexity < n; ~n/3 keeps small sets meaningful, 30 is the usual default.
    perplexity = min(30.0, max(2.0, (n - 1) / 3.0))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(z_mu)


def _spread_out(points: np.ndarray, size: float, limit: int, seed: int) -> np.ndarray:
    """Indices of up to `limit` points, in random order, none within `size` of another."""
    order = np.random.default_rng(seed).permutation(len(points))
    chosen: list[int] = []
    for index in order:
        if len(chosen) == limit:
            break
        if chosen:
            gaps = np.abs(points[chosen] - points[index]).max(axis=1)
            if gaps.min() < size * THUMBNAIL_MIN_SEPARATION:
                continue
        chosen.append(index)
    return np.array(chosen, dtype=int)


def plot_embedding(
    z_mu: np.ndarray,
    thumbnails: np.ndarray,
    out_png: str | os.PathLike,
    seed: int = 0,
    max_points: int = 300,
) -> np.ndarray:
    """The poster's embedding: t-SNE of g_mu(x), with galaxy thumbnails at their positions.

    Every row of z_mu is embedded; at most max_points thumbnails, spread so they do not overlap,
    are drawn (each with its own stretch, so faint galaxies show), the rest as faint dots.
    Returns the (N, 2) embedding so that callers can keep it.
    """
    z_mu = np.asarray(z_mu, dtype=np.float64)
    thumbnails = _as_images("thumbnails", thumbnails)
    if z_mu.ndim != 2 or z_mu.shape[1] < 2 or len(z_mu) < 4:
        raise DataError(f"z_mu: need (N, d) with N >= 4, d >= 2 for a t-SNE, got {z_mu.shape}")
    if len(thumbnails) != len(z_mu):
        raise DataError(f"thumbnails: {len(thumbnails)} images for {len(z_mu)} latent vectors")
    if not np.all(np.isfinite(z_mu)):
        raise DataError("z_mu: contains NaN or Inf")
    embedding = _tsne(z_mu, seed)
    low, high = embedding.min(axis=0), embedding.max(axis=0)
    size = THUMBNAIL_FRACTION * float(np.max(high - low) or 1.0)
    shown = _spread_out(embedding, size, max_points, seed)

    figure = Figure(figsize=(10, 10), facecolor=DARK)
    ax = figure.add_axes((0.02, 0.02, 0.96, 0.93), facecolor=DARK)
    ax.scatter(embedding[:, 0], embedding[:, 1], s=3, color="#5a6b8c", alpha=0.6, linewidths=0)
    for index in shown:
        sky, scale = display_limits(thumbnails[index : index + 1])
        cx, cy = embedding[index]
        half = size / 2
        extent = (cx - half, cx + half, cy - half, cy + half)
        _show(ax, to_display(thumbnails[index], sky, scale), extent=extent)
    # A square window around the embedding, so the equal-aspect axes fill the square figure.
    centre, half_span = (low + high) / 2, float(np.max(high - low)) / 2 + size
    ax.set_xlim(centre[0] - half_span, centre[0] + half_span)
    ax.set_ylim(centre[1] - half_span, centre[1] + half_span)
    ax.set_aspect("equal")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(
        rf"t-SNE of $g_\mu(x)$: {len(z_mu)} galaxies, {len(shown)} drawn",
        color="white",
        fontsize=12,
    )
    _save(figure, out_png)
    return embedding


def plot_traversals(grid: np.ndarray, out_png: str | os.PathLike, steps: Sequence[float]) -> Path:
    """The poster's latent-space figure: f_mu(z) with one coordinate of z moved at a time.

    grid: (d, k, C, H, W); row i holds f_mu(steps[j] e_i) for the k = len(steps) steps (in
    standard deviations of the prior), so a centre step of 0 is f_mu(0) in every row. One
    stretch for the whole grid, so brightness changes along a row are visible.
    """
    grid = _as_images("grid", grid, leading_dims=2)
    dims, k = grid.shape[:2]
    steps = [float(step) for step in steps]
    if len(steps) != k:
        raise DataError(f"steps: {len(steps)} values for a grid of {k} columns")
    sky, scale = display_limits(grid.reshape((-1,) + grid.shape[2:]))
    figure = Figure(figsize=(k * PANEL_INCHES * 0.7 + 0.6, dims * PANEL_INCHES * 0.7 + 0.5))
    axes = figure.subplots(dims, k, squeeze=False, gridspec_kw={"wspace": 0.04, "hspace": 0.04})
    figure.subplots_adjust(left=0.07, right=0.99, bottom=0.01, top=0.93)
    for i in range(dims):
        for j in range(k):
            _show(axes[i, j], to_display(grid[i, j], sky, scale))
        axes[i, 0].set_ylabel(rf"$z_{{{i + 1}}}$", rotation=0, labelpad=14, fontsize=10)
    for j, step in enumerate(steps):
        label = r"$f_\mu(0)$" if step == 0 else f"{step:+g} sd"
        axes[0, j].set_title(label, fontsize=9)
    return _save(figure, out_png)


def read_statistics(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every (K, 2) dataset of a run's statistics.h5, by its path in the file ("train/loss")."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such statistics file")
    statistics: dict[str, np.ndarray] = {}

    def collect(name: str, item) -> None:
        if isinstance(item, h5py.Dataset) and item.ndim == 2 and item.shape[1] == 2:
            statistics[name] = np.asarray(item[()], dtype=np.float64)

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(collect)
    except OSError as error:
        raise DataError(f"{path}: not a readable HDF5 statistics file ({error})") from None
    if not statistics:
        raise DataError(f"{path}: holds no (K, 2) statistics datasets")
    return statistics


def _robust_ylim(values: list[np.ndarray]) -> tuple[float, float] | None:
    """y-limits over all curves, past each curve's early transient."""
    kept = [v[int(len(v) * CURVE_TRANSIENT_FRACTION) :] for v in values]
    pooled = np.concatenate([v for v in kept if v.size] or [np.zeros(0)])
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        return None
    low, high = float(pooled.min()), float(pooled.max())
    pad = 0.05 * (high - low) or 0.05 * max(abs(high), 1.0)
    return low - pad, high + pad


def _panel_order(name: str) -> tuple[bool, str]:
    quantity = name.rpartition("/")[2]
    return "loss" not in quantity, name


def phase_colours(panels: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, str]:
    """One colour per phase ("train", "sd/train", ...) in every panel, so a line can be followed
    from one quantity to the next."""
    phases = dict.fromkeys(phase for curves in panels.values() for phase, _ in curves)
    return {phase: f"C{index % 10}" for index, phase in enumerate(phases)}


def plot_training_curves(stats: dict[str, np.ndarray], out_png: str | os.PathLike) -> Path:
    """Training statistics against iteration: one panel per quantity, one line per phase.

    Names "phase/quantity" ("train/loss", "validation/loss") share the panel of their quantity.
    """
    panels: dict[str, list[tuple[str, np.ndarray]]] = {}
    # Loss panels first, then the other quantities alphabetically.
    for name, series in sorted(stats.items(), key=lambda item: _panel_order(item[0])):
        series = np.asarray(series, dtype=np.float64)
        if series.ndim != 2 or series.shape[1] != 2:
            raise DataError(
                f"stats[{name!r}]: expected (K, 2) (iteration, value), got {series.shape}"
            )
        if len(series) == 0:
            continue
        phase, _, quantity = name.rpartition("/")
        panels.setdefault(quantity, []).append((phase or quantity, series))
    if not panels:
        raise DataError("stats: no statistics to plot")
    colours = phase_colours(panels)
    figure = Figure(figsize=(7, 2.6 * len(panels) + 0.3), layout="constrained")
    axes = figure.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (quantity, curves) in zip(axes, panels.items(), strict=True):
        for phase, series in curves:
            marker = "o" if len(series) <= 50 else None
            ax.plot(series[:, 0], series[:, 1], label=phase, marker=marker, markersize=3,
                    color=colours[phase])
        limits = _robust_ylim([series[:, 1] for _, series in curves])
        if limits is not None:
            ax.set_ylim(*limits)
        ax.set_ylabel(quantity)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("iteration")
    return _save(figure, out_png)


def plot_residual_comparison(
    x: np.ndarray,
    recon_mu: np.ndarray,
    baseline_model: np.ndarray,
    out_png: str | os.PathLike,
    k: int = 6,
) -> Path:
    """Input, VAE mean, Gaussian fit and both residuals for the first k images.

    Shows why a single Gaussian misfits: its residual keeps arms, bars and companions that the
    VAE's reconstruction takes in. The three images share one stretch per row; the residuals
    share one symmetric colour scale per row (band means for three-band images).
    """
    x = _as_images("x", x)
    recon_mu = _same_shape("recon_mu", recon_mu, x)
    baseline_model = _same_shape("baseline_model", baseline_model, x)
    rows = min(k, len(x))
    if rows < 1:
        raise DataError(f"k: need at least one image to draw, got k = {k}")
    figure = Figure(figsize=(5.4 * PANEL_INCHES, rows * PANEL_INCHES + 0.4), layout="constrained")
    axes = figure.subplots(rows, 5, squeeze=False)
    titles = (
        r"input $x$",
        r"VAE $f_\mu(g_\mu(x))$",
        r"Gaussian fit $\hat{x}$",
        r"$x - f_\mu(g_\mu(x))$",
        r"$x - \hat{x}$",
    )
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=10)
    for row in range(rows):
        sky, scale = display_limits(np.stack([x[row], recon_mu[row], baseline_model[row]]))
        for column, images in enumerate((x, recon_mu, baseline_model)):
            _show(axes[row, column], to_display(images[row], sky, scale))
        residuals = [x[row] - recon_mu[row], x[row] - baseline_model[row]]
        maps = [_band_mean(residual) for residual in residuals]
        limit = float(np.percentile(np.abs(np.stack(maps)), 99.5)) or 1.0
        for column, residual, residual_map in zip((3, 4), residuals, maps, strict=True):
            ax = axes[row, column]
            image = ax.imshow(
                residual_map, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"MSE {np.mean(residual**2):.2e}", fontsize=8)
        figure.colorbar(image, ax=axes[row, 4], fraction=0.046, pad=0.03)
    return _save(figure, out_png)
