"""One scale convention for every galaxy stamp, real or synthetic.

Every stamp is centred on the galaxy's flux-weighted centre and spans `STAMP_SIDE_IN_R50` = 11
half-light radii (about 5 Petrosian radii of an exponential disc, which matches Galaxy Zoo's 207-px
centre crop of 424-px cutouts whose field is about 10 Petrosian radii), resampled to size x size
(69 x 69) pixels. Downscaling averages the exact pixel areas each output pixel covers (no aliasing);
upscaling interpolates bilinearly. Pixels beyond the input's edge repeat the edge pixel.

Normalisation (invertible): `data = (raw - offset) / scale` where `offset` (one number per band) is
the median of the stamp's 4-pixel border, i.e. the sky, and `scale` (one number per image, shared by
the bands so colours are kept) is the 99.9th percentile of the sky-subtracted stamp (about the
fifth brightest of 4761 pixels, so one hot pixel barely moves it). The galaxy's pixels then lie
mostly in [0, 1] and the sky near 0.

The three steps are batched and vectorised: `measure` (sky from the image border; the central
source's pixels, detected at 3 sigma and deblended from touching neighbours by a watershed, unless
a segmentation mask is given; its flux-weighted centre and the r50 of its curve of growth),
`cutout` (resample around them) and `normalise`; `make_stamps` runs all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

STAMP_SIDE_IN_R50 = 11.0
STAMP_SIZE = 69
SKY_BORDER = 4
SCALE_PERCENTILE = 99.9

NORMALISATION_DESCRIPTION = (
    f"data = (raw - offset[:, :, None, None]) / scale[:, None, None, None]; offset = per-band "
    f"median of the stamp's {SKY_BORDER}-pixel border (sky); scale = per-image "
    f"{SCALE_PERCENTILE}th percentile of the sky-subtracted stamp over all bands; stamp centred on "
    f"the flux-weighted centre, side {STAMP_SIDE_IN_R50:g} half-light radii, area-averaged "
    f"(downscaling) or bilinear (upscaling)"
)

_DETECTION_SMOOTHING_PX = 1.0
_DETECTION_THRESHOLD_SIGMA = 3.0
_MIN_SEGMENT_PIXELS = 5
_SEGMENT_GROWTH_PX = 2
_DEBLEND_SMOOTHING_PX = 2.5
_DEBLEND_PEAK_SEPARATION_PX = 6
_DEBLEND_PEAK_SIGMA = 8.0
_GROWTH_BIN_PX = 0.25
_MIN_R50_PX = 0.5
_CHUNK = 256


@dataclass
class Stamps:
    """Normalised stamps plus what was measured to cut them (raw = data * scale + offset)."""

    data: np.ndarray  # float32 (N, C, size, size)
    scale: np.ndarray  # float32 (N,)
    offset: np.ndarray  # float32 (N, C)
    centres: np.ndarray  # float64 (N, 2): (row, column) in input pixel indices
    r50: np.ndarray  # float64 (N,): half-light radius in input pixels


def border_pixels(images: np.ndarray, width: int = SKY_BORDER) -> np.ndarray:
    """The outer `width`-pixel frame of each image, flattened over the last two axes."""
    images = np.asarray(images)
    height, breadth = images.shape[-2:]
    frame = np.zeros((height, breadth), dtype=bool)
    frame[:width] = frame[-width:] = True
    frame[:, :width] = frame[:, -width:] = True
    return images[..., frame]


def sky_and_noise(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust standard deviation (1.4826 MAD) of the border, per image (and band)."""
    border = border_pixels(images).astype(np.float64)
    sky = np.median(border, axis=-1)
    noise = 1.4826 * np.median(np.abs(border - sky[..., None]), axis=-1)
    return sky, noise


def _in_plane(connectivity: int) -> np.ndarray:
    """A 3-D structuring element that links pixels within an image, never across images."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, connectivity)
    return structure


def _nearest_to_centre(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the nonzero label nearest the centre within the central third, and whether any."""
    count, height, width = labels.shape
    window_rows = slice(height // 3, height - height // 3)
    window_cols = slice(width // 3, width - width // 3)
    window_labels = labels[:, window_rows, window_cols].reshape(count, -1)
    rows, cols = np.mgrid[window_rows, window_cols]
    centre_distance = np.hypot(rows - (height - 1) / 2, cols - (width - 1) / 2).ravel()
    distance = np.where(window_labels > 0, centre_distance, np.inf)
    nearest = distance.argmin(axis=1)
    found = np.isfinite(distance[np.arange(count), nearest])
    return window_labels[np.arange(count), nearest], found


def _nearest_peak(markers: np.ndarray) -> np.ndarray:
    """Per image, the nonzero marker nearest the image centre (each image must hold one)."""
    count, height, width = markers.shape
    rows, cols = np.mgrid[0:height, 0:width]
    centre_distance = np.hypot(rows - (height - 1) / 2, cols - (width - 1) / 2)
    distance = np.where(markers > 0, centre_distance, np.inf).reshape(count, -1)
    return markers.reshape(count, -1)[np.arange(count), distance.argmin(axis=1)]


def _separated_peaks(image: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Pixels of `allowed` that are the maximum within 6 px (a 13 x 13 window) of (N, H, W)."""
    radius = _DEBLEND_PEAK_SEPARATION_PX
    local = (image == ndimage.maximum_filter(image, size=(1, 3, 3))) & allowed
    image_index, row, col = np.nonzero(local)
    padded = np.pad(image, ((0, 0), (radius, radius), (radius, radius)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * radius + 1,) * 2, axis=(1, 2))
    highest = windows[image_index, row, col].max(axis=(1, 2))
    peaks = np.zeros(image.shape, dtype=bool)
    peaks[image_index, row, col] = image[image_index, row, col] >= highest
    return peaks


def segment(signal: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    """Pixels of the central source in sky-subtracted images (N, H, W) -> bool (N, H, W).

    Detection: smooth by a 1-px Gaussian, keep pixels 3 sigma above the (smoothed) sky noise and
    drop specks under 5 pixels; the central source is the detected region nearest the image centre
    (it must reach the central third). Deblending: where that region holds several peaks of the
    image smoothed by 2.5 px, at least 6 px apart and 8 sigma above the sky, a watershed from them
    splits it and the basin of the peak nearest the centre is kept (the smoothing keeps a spiral's
    knots in one galaxy). The segment is then grown by 2 pixels (a 5 x 5 square) into undetected
    pixels to include the faint wings. Where nothing is detected the central disc of radius
    min(H, W)/4 stands in. `noise` (N,), the sky's standard deviation, is measured on the border
    when not given.
    """
    signal = np.asarray(signal, dtype=np.float32)
    count, height, width = signal.shape
    if noise is None:
        _, noise = sky_and_noise(signal)
    smoothed = ndimage.gaussian_filter(
        signal, sigma=(0, _DETECTION_SMOOTHING_PX, _DETECTION_SMOOTHING_PX)
    )
    smoothed_noise = 1.4826 * np.median(np.abs(border_pixels(smoothed)), axis=-1)
    threshold = _DETECTION_THRESHOLD_SIGMA * np.maximum(smoothed_noise, 1e-12)
    detected = smoothed > threshold[:, None, None]
    regions, n_regions = ndimage.label(detected, structure=_in_plane(1))
    sizes = np.bincount(regions.ravel(), minlength=n_regions + 1)
    sizes[0] = 0
    regions[sizes[regions] < _MIN_SEGMENT_PIXELS] = 0
    detected = regions > 0

    main_region, found = _nearest_to_centre(regions)
    mask = (regions == main_region[:, None, None]) & found[:, None, None]

    # Deblend only where the central region holds several significant peaks.
    broad = ndimage.gaussian_filter(
        signal, sigma=(0, _DEBLEND_SMOOTHING_PX, _DEBLEND_SMOOTHING_PX), truncate=3.0
    )
    peaks = _separated_peaks(broad, mask & (broad > (_DEBLEND_PEAK_SIGMA * noise)[:, None, None]))
    markers, _ = ndimage.label(peaks, structure=_in_plane(2))
    marker_image = np.array([box[0].start for box in ndimage.find_objects(markers)], dtype=int)
    blended = np.flatnonzero(np.bincount(marker_image, minlength=count) > 1)
    if len(blended):
        basins = watershed(-broad[blended], markers[blended], connectivity=_in_plane(1),
                           mask=mask[blended])
        main_peak = _nearest_peak(markers[blended])
        mask[blended] = basins == main_peak[:, None, None]
    free = ~detected | mask
    grow = (1, 2 * _SEGMENT_GROWTH_PX + 1, 2 * _SEGMENT_GROWTH_PX + 1)
    mask = ndimage.maximum_filter(mask.view(np.uint8), size=grow).view(bool) & free
    rows, cols = np.mgrid[0:height, 0:width]
    fallback = np.hypot(rows - (height - 1) / 2, cols - (width - 1) / 2) <= min(height, width) / 4
    mask[~found] = fallback
    return mask


def measure(
    images: np.ndarray, segmentation_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flux-weighted centres (N, 2) as (row, col) and half-light radii (N,) in pixels.

    `images` (N, H, W) is a detection image (one band, or the sum of the bands). The sky (median of
    the 4-px border) is subtracted; only pixels of `segmentation_mask` (bool (N, H, W), True on the
    galaxy; found by `segment` when None) count. r50 comes from the curve of growth in circular
    apertures around the centre: the radius enclosing half the segment's flux.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"measure expects images of shape (N, H, W), got {images.shape}")
    count, height, width = images.shape
    sky, noise = sky_and_noise(images)
    signal = images - sky.astype(np.float32)[:, None, None]
    if segmentation_mask is None:
        mask = segment(signal, noise)
    else:
        mask = np.asarray(segmentation_mask, dtype=bool)
    if mask.shape != images.shape:
        raise ValueError(f"segmentation mask shape {mask.shape} != images shape {images.shape}")
    flux = np.where(mask, signal, np.float32(0))
    positive = np.clip(flux, 0, None)
    total_positive = positive.sum(axis=(1, 2), dtype=np.float64)
    safe_total = np.where(total_positive > 0, total_positive, 1.0)
    row_profile = positive.sum(axis=2, dtype=np.float64)
    col_profile = positive.sum(axis=1, dtype=np.float64)
    centre_row = row_profile @ np.arange(height, dtype=np.float64) / safe_total
    centre_col = col_profile @ np.arange(width, dtype=np.float64) / safe_total
    centre_row = np.where(total_positive > 0, centre_row, (height - 1) / 2)
    centre_col = np.where(total_positive > 0, centre_col, (width - 1) / 2)
    centres = np.stack([centre_row, centre_col], axis=1)
    return centres, half_light_radius(flux, centres)


def half_light_radius(flux: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Radius (N,) enclosing half of each image's total flux, from its curve of growth."""
    count, height, width = flux.shape
    n_bins = int(np.ceil(np.hypot(height, width) / _GROWTH_BIN_PX)) + 1
    row_offset = (np.arange(height)[None, :] - centres[:, :1]).astype(np.float32)
    col_offset = (np.arange(width)[None, :] - centres[:, 1:]).astype(np.float32)
    radius_squared = row_offset[:, :, None] ** 2 + col_offset[:, None, :] ** 2
    bins = (np.sqrt(radius_squared) * np.float32(1 / _GROWTH_BIN_PX)).astype(np.int32)
    bins += (np.arange(count, dtype=np.int32) * n_bins)[:, None, None]
    profile = np.bincount(bins.ravel(), weights=flux.ravel(), minlength=count * n_bins)
    growth = np.cumsum(profile.reshape(count, n_bins), axis=1)
    half = 0.5 * growth[:, -1]
    reached = growth >= half[:, None]
    first = reached.argmax(axis=1)
    before = np.where(first > 0, growth[np.arange(count), np.maximum(first - 1, 0)], 0.0)
    at = growth[np.arange(count), first]
    step = np.where(at > before, at - before, 1.0)
    fraction = np.clip((half - before) / step, 0.0, 1.0)
    r50 = (first + fraction) * _GROWTH_BIN_PX
    return np.where(half > 0, np.maximum(r50, _MIN_R50_PX), min(height, width) / 8)


def _resampling_matrices(
    centre: np.ndarray, side: np.ndarray, n_in: int, size: int
) -> np.ndarray:
    """(N, size, n_in) weights mapping n_in input pixels onto `size` pixels spanning `side` px.

    Input pixel k covers [k, k+1) in edge coordinates (its centre is index k); the output spans
    [centre + 0.5 - side/2, centre + 0.5 + side/2). Downscaling (step >= 1) uses the exact overlap
    of each output pixel with the input pixels (area averaging); upscaling uses linear
    interpolation between input pixel centres. The first and last input pixels extend to
    infinity, so anything beyond the edge repeats the edge pixel.
    """
    step = side / size
    start = centre + 0.5 - side / 2
    low = (start[:, None] + np.arange(size) * step[:, None]).astype(np.float32)[:, :, None]
    step32 = step.astype(np.float32)[:, None, None]
    index = np.arange(n_in, dtype=np.float32)
    weights = np.empty((len(step), size, n_in), dtype=np.float32)
    down = step >= 1
    if down.any():
        left, right = index.copy(), index + 1
        left[0], right[-1] = -np.inf, np.inf
        high = low[down] + step32[down]
        overlap = np.minimum(high, right) - np.maximum(low[down], left)
        weights[down] = np.clip(overlap, 0, None) / step32[down]
    up = ~down
    if up.any():
        centre_out = np.clip(low[up] + step32[up] / 2 - 0.5, 0, n_in - 1)
        weights[up] = np.clip(1 - np.abs(centre_out - index), 0, None)
    return weights


def _resample(
    images: np.ndarray, centres: np.ndarray, r50: np.ndarray, size: int, power: int
) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"cutout expects images of shape (N, C, H, W), got {images.shape}")
    count, bands, height, width = images.shape
    centres = np.asarray(centres, dtype=np.float64).reshape(count, 2)
    side = STAMP_SIDE_IN_R50 * np.asarray(r50, dtype=np.float64).reshape(count)
    out = np.empty((count, bands, size, size), dtype=np.float32)
    for start in range(0, count, _CHUNK):
        part = slice(start, start + _CHUNK)
        rows = _resampling_matrices(centres[part, 0], side[part], height, size)[:, None]
        cols_t = _resampling_matrices(centres[part, 1], side[part], width, size)[:, None]
        if power != 1:
            rows, cols_t = rows**power, cols_t**power
        cols_t = cols_t.transpose(0, 1, 3, 2)
        out[part] = np.matmul(np.matmul(rows, images[part]), cols_t)
    return out


def cutout(
    images: np.ndarray, centres: np.ndarray, r50: np.ndarray, size: int = STAMP_SIZE
) -> np.ndarray:
    """Stamps (N, C, size, size) of side 11 r50 centred on `centres` (row, col), anti-aliased."""
    return _resample(images, centres, r50, size, power=1)


def cutout_variance(
    variances: np.ndarray, centres: np.ndarray, r50: np.ndarray, size: int = STAMP_SIZE
) -> np.ndarray:
    """Per-pixel variance of `cutout(images, ...)` for independent input noise of `variances`."""
    return _resample(variances, centres, r50, size, power=2)


def normalise(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, scale (N,), offset (N, C)) with data = (stamps - offset) / scale; see module doc."""
    stamps = np.asarray(stamps, dtype=np.float32)
    if stamps.ndim != 4:
        raise ValueError(f"normalise expects stamps of shape (N, C, S, S), got {stamps.shape}")
    offset = np.median(border_pixels(stamps), axis=-1).astype(np.float32)
    centred = stamps - offset[:, :, None, None]
    scale = np.percentile(centred.reshape(len(stamps), -1), SCALE_PERCENTILE, axis=1)
    fallback = np.abs(centred).reshape(len(stamps), -1).max(axis=1)
    scale = np.where(scale > 0, scale, np.where(fallback > 0, fallback, 1.0)).astype(np.float32)
    data = (centred / scale[:, None, None, None]).astype(np.float32)
    return data, scale, offset


def make_stamps(
    images: np.ndarray,
    size: int = STAMP_SIZE,
    segmentation_mask: np.ndarray | None = None,
) -> Stamps:
    """measure (on the band sum) + cutout + normalise for images (N, C, H, W)."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"make_stamps expects images of shape (N, C, H, W), got {images.shape}")
    centres, r50 = measure(images.sum(axis=1), segmentation_mask)
    data, scale, offset = normalise(cutout(images, centres, r50, size))
    return Stamps(data=data, scale=scale, offset=offset, centres=centres, r50=r50)
