"""The canvas a batch of synthetic galaxies is drawn on: its size and geometry, the bands and
their colours, Sérsic profiles, and the three light layers that get different blurs."""

from __future__ import annotations

import math

import numpy as np

CANVAS = 96
CENTRE = (CANVAS - 1) / 2
SERSIC_TRUNCATION = 6.0  # in r_e

BAND_NAMES = ("g", "r", "i")
REFERENCE_BAND = 1  # the single band rendered when bands=1

# Colours as (g, r, i) flux ratios relative to r.
RED = np.array([0.45, 1.0, 1.35], np.float32)
DISC = np.array([0.75, 1.0, 1.12], np.float32)
BLUE = np.array([1.25, 1.0, 0.82], np.float32)
BAR = 0.5 * (RED + DISC)
SKY_COLOUR = np.array([0.55, 1.0, 1.45], np.float32)


def sersic_b(n: np.ndarray) -> np.ndarray:
    """b_n of the Sérsic profile exp(-b_n (r/r_e)^(1/n)), so that r_e encloses half the light."""
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)


def rotate(x: np.ndarray, y: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) rotated counter-clockwise by `angle`."""
    cos, sin = np.cos(angle), np.sin(angle)
    return x * cos - y * sin, x * sin + y * cos


def column(values: np.ndarray) -> np.ndarray:
    """(k,) -> float32 (k, 1, 1), to broadcast one value per image over its pixels."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size) -> np.ndarray:
    return np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]), size))


class Canvas:
    """The light of a batch of images, in three layers that get different blurs.

    Scenes are described in field pixels (canvas pixels at zoom 1, centred on the canvas); image
    i shows its field magnified by zoom[i] <= 1, so a large galaxy can be shown whole.
    """

    def __init__(self, zoom: np.ndarray, bands: int) -> None:
        self.zoom = np.asarray(zoom, dtype=np.float64)
        self.count = len(self.zoom)
        self.bands = bands
        # Three bands are stored red first (i, r, g), like the R, G, B planes of a colour JPEG.
        self.band_index = [REFERENCE_BAND] if bands == 1 else [2, 1, 0]
        field = CENTRE + (np.arange(CANVAS) - CENTRE) / self.zoom[:, None]
        self.rows = field.astype(np.float32)[:, :, None]
        self.cols = field.astype(np.float32)[:, None, :]
        shape = (self.count, bands, CANVAS, CANVAS)
        self.smooth = np.zeros(shape, np.float32)  # blurred by the PSF only
        self.clumps = np.zeros(shape, np.float32)  # blurred by a clump size, then the PSF
        self.tails = np.zeros(shape, np.float32)  # blurred by a wide Gaussian, then the PSF

    def to_canvas(self, index: np.ndarray, field_position: np.ndarray) -> np.ndarray:
        """Canvas pixel coordinates of field positions of the images `index`."""
        return CENTRE + (field_position - CENTRE) * self.zoom[index]

    def colour(self, sed: np.ndarray) -> np.ndarray:
        """(..., 3) (g, r, i) flux ratios -> the rendered bands, (..., bands)."""
        return np.asarray(sed, np.float32)[..., self.band_index]

    def add_profile(self, index: np.ndarray, profile: np.ndarray, flux: np.ndarray,
                    sed: np.ndarray) -> None:
        """Add `profile` (k, H, W), rescaled to total `flux` (k,), in colour `sed` to the images."""
        if len(index) == 0:
            return
        total = profile.sum(axis=(1, 2), dtype=np.float64)
        weight = (np.asarray(flux) / np.maximum(total, 1e-30)).astype(np.float32)
        coloured = weight[:, None] * np.broadcast_to(self.colour(sed), (len(index), self.bands))
        self.smooth[index] += coloured[:, :, None, None] * profile[:, None]

    def splat(self, layer: np.ndarray, index: np.ndarray, row: np.ndarray, col: np.ndarray,
              flux: np.ndarray) -> None:
        """Deposit point fluxes (k, bands) at field (row, col) of images `index`, bilinearly."""
        if len(index) == 0:
            return
        row, col = self.to_canvas(index, row), self.to_canvas(index, col)
        top = np.floor(row).astype(np.int64)
        left = np.floor(col).astype(np.int64)
        below = row - top
        right = col - left
        positions, weights = [], []
        for d_row, w_row in ((0, 1 - below), (1, below)):
            for d_col, w_col in ((0, 1 - right), (1, right)):
                r, c = top + d_row, left + d_col
                inside = (r >= 0) & (r < CANVAS) & (c >= 0) & (c < CANVAS)
                for band in range(self.bands):
                    flat = ((index * self.bands + band) * CANVAS + r) * CANVAS + c
                    positions.append(flat[inside])
                    weights.append((w_row * w_col * flux[:, band])[inside])
        deposit = np.bincount(np.concatenate(positions), np.concatenate(weights),
                              minlength=layer.size)
        layer += deposit.reshape(layer.shape).astype(np.float32)

    def frame(self, index: np.ndarray, centre: np.ndarray,
              angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Field coordinates (u along the major axis, v along the minor axis) around `centre`
        (k, 2) over the canvas of each image in `index`, each (k, H, W)."""
        cos, sin = column(np.cos(angle)), column(np.sin(angle))
        d_row = self.rows[index] - column(centre[:, 0])
        d_col = self.cols[index] - column(centre[:, 1])
        return d_col * cos + d_row * sin, d_row * cos - d_col * sin

    def elliptical_radius(self, index: np.ndarray, centre: np.ndarray, angle: np.ndarray,
                          axis_ratio: np.ndarray) -> np.ndarray:
        """sqrt(u² + (v/q)²), softened by a fraction of a pixel at the centre, (k, H, W)."""
        u, v = self.frame(index, centre, angle)
        return np.sqrt(u * u + (v / column(axis_ratio)) ** 2 + np.float32(0.05))

    def sersic(self, index: np.ndarray, centre: np.ndarray, r_e: np.ndarray, n: np.ndarray,
               axis_ratio: np.ndarray, angle: np.ndarray) -> np.ndarray:
        """exp(-b_n (r / r_e)^(1/n)) for each image in `index`, (k, H, W), fading out beyond
        SERSIC_TRUNCATION r_e as real haloes do (untruncated n = 6 wings fill any field)."""
        radius = self.elliptical_radius(index, centre, angle, axis_ratio) / column(r_e)
        power = np.exp(np.log(radius) / column(n))
        fade = (radius * np.float32(1 / SERSIC_TRUNCATION)) ** 4
        return np.exp(-column(sersic_b(n)) * power - fade)
