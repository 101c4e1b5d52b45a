"""A PNG grid of dataset images, one labelled block per dataset (real next to synthetic).

Stamps are normalised (sky 0, galaxy's bright end 1), so one asinh stretch shows every image:
linear near the sky, logarithmic in the bright core, so faint discs and bright bulges are both
visible. Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import math

import numpy as np

from galaxy_model.dataset import GalaxyDataset
from mochapy.atomic import write_atomically

ASINH_SOFTENING = 0.05  # in units of the normalised galaxy brightness (99.9th percentile = 1)
GAP_PX = 2
GAP_GREY = 0.35
BLOCK_INCHES = 3.2


def display_stretch(stamp: np.ndarray) -> np.ndarray:
    """(C, S, S) normalised stamp -> (S, S, 3) RGB in [0, 1] by asinh(x / a) / asinh(1 / a)."""
    stretched = np.arcsinh(np.clip(stamp, 0, None) / ASINH_SOFTENING)
    stretched /= np.arcsinh(1 / ASINH_SOFTENING)
    rgb = np.repeat(stretched, 3, axis=0) if stamp.shape[0] == 1 else stretched
    return np.clip(np.moveaxis(rgb, 0, -1), 0, 1)


def mosaic(stamps: np.ndarray) -> np.ndarray:
    """(N, C, S, S) stamps tiled into a near-square RGB grid with thin grey gaps."""
    count, _, side, _ = stamps.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pitch = side + GAP_PX
    canvas = np.full((rows * pitch - GAP_PX, columns * pitch - GAP_PX, 3), GAP_GREY)
    for index, stamp in enumerate(stamps):
        top, left = (index // columns) * pitch, (index % columns) * pitch
        canvas[top : top + side, left : left + side] = display_stretch(stamp)
    return canvas


def montage(
    datasets: list[tuple[str, GalaxyDataset]], n_per_set: int, out_png: str, seed: int = 0
) -> None:
    """Write a PNG with `n_per_set` randomly chosen images of each (label, dataset), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    figure = Figure(figsize=(BLOCK_INCHES * len(datasets), BLOCK_INCHES + 0.4), dpi=150)
    FigureCanvasAgg(figure)
    for position, (label, ds) in enumerate(datasets, start=1):
        chosen = np.sort(rng.choice(len(ds), size=min(n_per_set, len(ds)), replace=False))
        axes = figure.add_subplot(1, len(datasets), position)
        axes.imshow(mosaic(ds.data[chosen]), interpolation="nearest")
        axes.set_title(f"{label}\n{len(chosen)} of {len(ds)}", fontsize=9)
        axes.set_axis_off()
    figure.tight_layout()
    write_atomically(out_png, lambda temporary: figure.savefig(temporary, format="png"))
