"""Turn real images (FITS, JPEG/PNG, HDF5) into normalised galaxy stamps, as `synth` makes them.

Each image is centred on its one prominent galaxy: a robust sky and noise (sigma-clipped median
and MAD), a smoothed detection image thresholded at sky + 3 noise, connected components, and the
brightest component near the image centre (a bright star in a corner loses on distance). Its
centre and half-light radius are measured on that segment only, then the stamp is cut, resampled
and normalised by `galaxy_model.stamps`, the same code the synthetic data go through, so a model
trained on synthetic stamps sees real ones on the same scale. The per-image scale and offset are
kept, so the normalisation can be undone.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from galaxy_model import stamps
from galaxy_model.dataset import GalaxyDataset
from galaxy_model.readers import RawImage, check_usable, is_supported, read_images
from mochapy.errors import DataError

DETECTION_SMOOTHING_PX = 1.0
DETECTION_THRESHOLD_SIGMA = 3.0
MIN_COMPONENT_PIXELS = 5
SEGMENT_GROWTH_PX = 2
# A component's flux is down-weighted by exp(-d^2 / 2 w^2) with d its distance from the image
# centre and w this fraction of the image side: a star in a corner must be ~500x brighter than
# a galaxy a tenth of the side off centre to be chosen.
CENTRE_PREFERENCE_WIDTH = 0.2
CLIP_SIGMA = 3.0
CLIP_ITERATIONS = 5
CLIP_MAX_SAMPLES = 1_000_000
MAD_TO_SIGMA = 1.4826
# A stamp pixel is masked when more than this fraction of it comes from masked or padded pixels.
MASKED_AREA_FRACTION = 0.5
CENTRING_DESCRIPTION = (
    "brightest source near the image centre (sigma-clipped sky, 3-sigma detection on a 1-px "
    "smoothed image, flux weighted by closeness to the centre); flux-weighted centre and r50 "
    "measured on its segment grown by 2 px"
)


class PrepareWarning(UserWarning):
    """An input file or image was skipped; the message names it and says why."""


@dataclass
class PrepareSummary:
    """What prepare read and what it skipped (one reason per skipped file or image)."""

    read: int = 0
    files: int = 0
    skipped: list[str] = field(default_factory=list)

    def describe(self, out: str | None = None) -> str:
        """One line for the command line: read N, skipped M[, written to OUT]."""
        text = f"read {self.read} images from {self.files} files, skipped {len(self.skipped)}"
        return f"{text}, wrote {out}" if out else text


def prepare(
    inputs: list[str], size: int = stamps.STAMP_SIZE, bands: int = 1, progress: bool = False
) -> tuple[GalaxyDataset, PrepareSummary]:
    """Read every image under `inputs` (files or directories) into a normalised dataset.

    Unreadable or unusable files and images are skipped with a PrepareWarning; DataError if
    nothing at all could be used.
    """
    if bands not in (1, 3):
        raise DataError(f"--bands must be 1 or 3, got {bands}")
    if size < 8:
        raise DataError(f"--size must be at least 8 pixels, got {size}")
    from tqdm import tqdm

    summary = PrepareSummary()
    rows: list[PreparedStamp] = []
    files = list(expand_inputs(inputs, summary))
    show = progress and sys.stderr.isatty()
    for path in tqdm(files, desc="prepare", unit="file", disable=not show):
        summary.files += 1
        try:
            for image in read_images(path):
                try:
                    rows.append(prepare_image(image, size, bands))
                except DataError as exc:
                    _skip(summary, str(exc))
        except DataError as exc:
            _skip(summary, str(exc))
    if not rows:
        raise DataError(f"no usable image among {len(inputs)} input(s): {_first(summary)}")
    summary.read = len(rows)
    attrs = {"source": "prepare", "centring": CENTRING_DESCRIPTION, "inputs": " ".join(inputs)}
    return assemble(rows, attrs), summary


def expand_inputs(inputs: list[str], summary: PrepareSummary) -> Iterator[str]:
    """Files as given; a directory's supported files (recursively) in sorted path order."""
    for item in inputs:
        if os.path.isdir(item):
            yield from sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(item)
                for name in names
                if is_supported(name)
            )
        elif not os.path.exists(item):
            _skip(summary, f"{item}: no such file or directory")
        elif not is_supported(item):
            _skip(summary, f"{item}: unsupported file type")
        else:
            yield item


def _skip(summary: PrepareSummary, reason: str) -> None:
    summary.skipped.append(reason)
    warnings.warn(f"skipped {reason}", PrepareWarning, stacklevel=3)


def _first(summary: PrepareSummary) -> str:
    return summary.skipped[0] if summary.skipped else "no input files found"


@dataclass
class PreparedStamp:
    """One stamp in raw units (sky included) with its mask, variance and provenance."""

    stamp: np.ndarray  # (C, size, size)
    mask: np.ndarray  # (C, size, size) bool: mostly from masked pixels or beyond the image
    variance: np.ndarray | None
    provenance: str


def prepare_image(image: RawImage, size: int, bands: int) -> PreparedStamp:
    """Convert bands, find the galaxy, and cut its stamp (pixels beyond the image are sky)."""
    image = convert_bands(image, bands)
    check_usable(image)
    valid = np.ones(image.data.shape, bool) if image.mask is None else image.mask == 0
    sky = np.array(
        [clipped_sky_noise(band[ok])[0] for band, ok in zip(image.data, valid, strict=True)]
    )
    signal = image.data - sky[:, None, None].astype(np.float32)
    _, height, width = signal.shape
    if image.framed:
        centre = np.array([(height - 1) / 2, (width - 1) / 2])
        r50 = min(height, width) / stamps.STAMP_SIDE_IN_R50
    else:
        detection = signal.mean(axis=0)
        segment = galaxy_segment(detection)
        if segment is None:
            raise DataError(f"{image.provenance}: no source detected above the sky noise")
        centres, radii = stamps.measure(detection[None], segment[None])
        centre, r50 = centres[0], float(radii[0])
    variance = None if image.ivar is None else _variance(image.ivar)
    return cut_stamp(signal, sky, ~valid, variance, centre, r50, size, image.provenance)


def convert_bands(image: RawImage, bands: int) -> RawImage:
    """3 bands -> 1 by their mean (mask: any band bad); 1 -> 3 is refused."""
    have = image.data.shape[0]
    if have == bands:
        return image
    if have == 1:
        raise DataError(f"{image.provenance}: one band, cannot make the {bands} bands requested")
    mask = None if image.mask is None else image.mask.any(axis=0, keepdims=True).astype(np.uint8)
    ivar = None
    if image.ivar is not None:
        # var(mean of 3) = sum(var) / 9
        ivar = (have**2 / _variance(image.ivar).sum(axis=0, keepdims=True)).astype(np.float32)
    return RawImage(
        data=image.data.mean(axis=0, keepdims=True),
        provenance=image.provenance,
        mask=mask,
        ivar=ivar,
        framed=image.framed,
    )


def _variance(ivar: np.ndarray) -> np.ndarray:
    """1 / ivar, with pixels of no information (ivar 0) given the median variance.

    Those pixels are masked anyway; a finite stand-in keeps the resampled variance finite.
    """
    ivar = np.asarray(ivar, dtype=np.float64)
    good = ivar > 0
    typical = 1.0 / np.median(ivar[good]) if good.any() else 1.0
    return np.where(good, 1.0 / np.where(good, ivar, 1.0), typical)


def clipped_sky_noise(values: np.ndarray) -> tuple[float, float]:
    """Sigma-clipped median and MAD-based standard deviation: sky and noise, robust to sources."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size > CLIP_MAX_SAMPLES:
        values = values[:: values.size // CLIP_MAX_SAMPLES + 1]
    centre, spread = float(np.median(values)), 0.0
    for _ in range(CLIP_ITERATIONS):
        spread = MAD_TO_SIGMA * float(np.median(np.abs(values - centre)))
        if spread == 0:
            break
        kept = values[np.abs(values - centre) < CLIP_SIGMA * spread]
        if kept.size == values.size:
            break
        values = kept
        centre = float(np.median(values))
    return centre, spread


def detect_sources(
    signal: np.ndarray, threshold_sigma: float = DETECTION_THRESHOLD_SIGMA
) -> tuple[np.ndarray, int]:
    """Label the connected regions of the smoothed sky-subtracted image above threshold * noise.

    The noise is measured on the smoothed image itself (smoothing correlates pixels); where that
    noise is nil (a synthetic image, or JPEG sky quantised to one value) a thousandth of the
    peak stands in. Regions smaller than MIN_COMPONENT_PIXELS are dropped (label 0).
    """
    smoothed = ndimage.gaussian_filter(signal.astype(np.float32), DETECTION_SMOOTHING_PX)
    _, noise = clipped_sky_noise(smoothed)
    threshold = threshold_sigma * noise if noise > 0 else max(1e-3 * float(smoothed.max()), 0.0)
    labels, count = ndimage.label(smoothed > threshold, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    small = sizes < MIN_COMPONENT_PIXELS
    small[0] = True
    kept = np.flatnonzero(~small)
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[kept] = np.arange(1, kept.size + 1)
    return relabel[labels], kept.size


def galaxy_segment(signal: np.ndarray) -> np.ndarray | None:
    """Pixels of the brightest source near the image centre, grown to take in its faint wings."""
    labels, count = detect_sources(signal)
    if count == 0:
        return None
    index = np.arange(1, count + 1)
    positive = np.clip(signal, 0, None)
    flux = ndimage.sum_labels(positive, labels, index)
    centroids = np.array(ndimage.center_of_mass(positive, labels, index)).reshape(count, 2)
    height, width = signal.shape
    offsets = centroids - np.array([(height - 1) / 2, (width - 1) / 2])
    width_px = CENTRE_PREFERENCE_WIDTH * min(height, width)
    preference = np.exp(-0.5 * (np.hypot(*offsets.T) / width_px) ** 2)
    chosen = int(index[np.argmax(flux * preference)])
    return grow_segment(labels == chosen)


def grow_segment(segment: np.ndarray) -> np.ndarray:
    """Dilate a source's pixels by SEGMENT_GROWTH_PX to take in its faint wings."""
    reach = np.arange(-SEGMENT_GROWTH_PX, SEGMENT_GROWTH_PX + 1)
    disc = np.hypot(*np.meshgrid(reach, reach)) <= SEGMENT_GROWTH_PX
    return ndimage.binary_dilation(segment, structure=disc)


def cut_stamp(
    signal: np.ndarray,
    sky: np.ndarray,
    bad: np.ndarray,
    variance: np.ndarray | None,
    centre: np.ndarray,
    r50: float,
    size: int,
    provenance: str,
) -> PreparedStamp:
    """The stamps.cutout of a sky-subtracted (C, H, W) image, sky beyond its edges, sky added back.

    Only the stamp's window (plus a 2-px margin) is cropped out and resampled, so a stamp from
    a large image costs no more than one from a small image. stamps.cutout repeats the edge
    pixel beyond an image; the window is padded with zero (sky) first, so the stamp shows sky
    there instead, and those pixels are masked like masked input pixels.
    """
    _, height, width = signal.shape
    half = stamps.STAMP_SIDE_IN_R50 * r50 / 2
    crop, pads, local_centre = [], [], []
    for axis_centre, extent in zip(centre, (height, width), strict=True):
        low = int(np.floor(axis_centre + 0.5 - half)) - 2
        high = int(np.ceil(axis_centre + 0.5 + half)) + 2
        crop.append(slice(max(low, 0), min(high, extent)))
        pads.append((max(0, -low), max(0, high - extent)))
        local_centre.append(axis_centre - low)
    window = (slice(None), *crop)
    layout = ((0, 0), *pads)
    local = np.pad(signal[window], layout)
    missing = np.pad(bad[window].astype(np.float32), layout, constant_values=1.0)
    centres = np.array([local_centre, local_centre])
    cut = stamps.cutout(np.stack([local, missing]), centres, np.array([r50, r50]), size)
    stamp_variance = None
    if variance is not None:
        local_variance = np.pad(variance[window], layout, mode="edge")
        stamp_variance = stamps.cutout_variance(
            local_variance[None], centres[:1], np.array([r50]), size
        )[0]
    return PreparedStamp(
        stamp=cut[0] + np.asarray(sky, np.float32)[:, None, None],
        mask=cut[1] > MASKED_AREA_FRACTION,
        variance=stamp_variance,
        provenance=provenance,
    )


def assemble(rows: list[PreparedStamp], attrs: dict) -> GalaxyDataset:
    """Normalise all stamps (stamps.normalise) into a dataset; keep mask and ivar where known.

    ivar is stored only when every stamp came with one, as a dataset is used as a whole.
    """
    raw = np.stack([row.stamp for row in rows])
    data, scale, offset = stamps.normalise(raw)
    mask = np.stack([row.mask for row in rows]).astype(np.uint8)
    ivar = None
    if all(row.variance is not None for row in rows):
        variance = np.stack([row.variance for row in rows])
        # data = (raw - offset) / scale, so var(data) = var(raw) / scale^2
        ivar = np.where(mask == 1, 0.0, scale[:, None, None, None] ** 2 / variance)
    _, bands, size, _ = data.shape
    return GalaxyDataset(
        data=data,
        scale=scale,
        offset=offset,
        provenance=[row.provenance for row in rows],
        ivar=ivar,
        mask=mask if mask.any() else None,
        attrs={
            "normalisation": stamps.NORMALISATION_DESCRIPTION,
            "size": size,
            "bands": bands,
            "stamp_side_in_r50": stamps.STAMP_SIDE_IN_R50,
            **attrs,
        },
    )
