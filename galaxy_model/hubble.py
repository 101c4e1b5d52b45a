"""The real validation split: galaxies cut from the Hubble eXtreme Deep Field image.

scikit-image bundles a 1000x872 RGB JPEG of the XDF inside its package (no download). Sources are
detected on its luminance (3 sigma above a sigma-clipped sky, like `prepare`) and deblended by a
watershed from the peaks of a smoothed image, since neighbours overlap in a deep field. A source
is kept when it is a whole, significant, resolved galaxy:

- significant: its smoothed peak stands DEBLEND_PEAK_SIGMA (8) noise above the sky; fainter
  sources are mostly noise-shaped fragments;
- not a bright star: the few bright stars of the field saturate all three colour planes at once
  in a white core (and show diffraction spikes); galaxies, redder or bluer, saturate one plane
  before the others. A source with at least MIN_WHITE_CORE_PX pixels saturated in every plane,
  making up at least WHITE_CORE_FRACTION of its pixels saturated in any plane, is a star;
- resolved: half-light radius of at least MIN_R50_PX (2.5 px). The image's point spread function
  has r50 of about 1 px, so this drops point sources, faint stars and distant compact galaxies
  alike, which carry no shape to learn;
- whole: its pixels do not touch the image edge and its stamp (side 11 r50) lies inside the
  image, so every stamp pixel is real.

Each kept galaxy is measured on its own segment and cut with the same stamps convention as the
synthetic data and `prepare` (side 11 r50, area-averaged, normalised per image). The selection is
deterministic: of 2840 sources it keeps 242 galaxies (91 at the edge, 2382 faint, 4 stars, 121
unresolved dropped).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from galaxy_model import stamps
from galaxy_model.dataset import GalaxyDataset
from galaxy_model.prepare import (
    PreparedStamp,
    assemble,
    clipped_sky_noise,
    convert_bands,
    cut_stamp,
    detect_sources,
    grow_segment,
)
from galaxy_model.readers import RawImage
from mochapy.errors import DataError

SOURCE_NAME = "hubble_xdf"
LABEL = "real (Hubble XDF)"
MIN_R50_PX = 2.5
DEBLEND_SMOOTHING_PX = 2.5
DEBLEND_PEAK_SEPARATION_PX = 6
DEBLEND_PEAK_SIGMA = 8.0
SATURATED = 250 / 255
MIN_WHITE_CORE_PX = 3
WHITE_CORE_FRACTION = 0.18
MEASURE_MARGIN_PX = 6
# How many galaxies the selection keeps from the bundled image (measured: 242), for checks.
KEPT_RANGE = (200, 290)


def hubble_image() -> np.ndarray:
    """The XDF colour image bundled with scikit-image as float32 (3, H, W) in [0, 1]."""
    from skimage.data import hubble_deep_field

    try:
        rgb = hubble_deep_field()
    except Exception as exc:  # skimage reports a missing data file in several ways
        raise DataError(
            f"scikit-image's bundled Hubble Deep Field image is unavailable: {exc}"
        ) from exc
    return np.moveaxis(np.asarray(rgb, dtype=np.float32) / 255.0, -1, 0)


def build_real_split(size: int = stamps.STAMP_SIZE, bands: int = 1) -> GalaxyDataset:
    """Detect, select and cut the XDF's resolved galaxies into a normalised dataset."""
    rgb = hubble_image()
    luminance = rgb.mean(axis=0)
    sky_level, noise = clipped_sky_noise(luminance)
    detection = luminance - np.float32(sky_level)
    labels = deblend(detection, noise)
    image = convert_bands(RawImage(data=rgb, provenance=SOURCE_NAME), bands)
    sky = np.array([clipped_sky_noise(band)[0] for band in image.data])
    signal = image.data - sky[:, None, None].astype(np.float32)
    nothing_bad = np.zeros(signal.shape, bool)
    every_label = np.arange(labels.max() + 1)
    white = ndimage.sum_labels(rgb.min(axis=0) >= SATURATED, labels, every_label)
    any_saturated = ndimage.sum_labels(rgb.max(axis=0) >= SATURATED, labels, every_label)
    smoothed = ndimage.gaussian_filter(detection, DEBLEND_SMOOTHING_PX)
    peak = ndimage.maximum(smoothed, labels, every_label)
    counts = {"sources": 0, "edge": 0, "faint": 0, "stars": 0, "unresolved": 0}
    rows: list[PreparedStamp] = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        counts["sources"] += 1
        if _touches_edge(box, labels.shape):
            counts["edge"] += 1
            continue
        if peak[label] < DEBLEND_PEAK_SIGMA * noise:
            counts["faint"] += 1
            continue
        if white[label] >= MIN_WHITE_CORE_PX and white[label] >= (
            WHITE_CORE_FRACTION * any_saturated[label]
        ):
            counts["stars"] += 1
            continue
        centre, r50 = measure_source(detection, labels, label, box)
        if r50 < MIN_R50_PX:
            counts["unresolved"] += 1
            continue
        provenance = f"{SOURCE_NAME} x={centre[1]:.1f} y={centre[0]:.1f}"
        stamp = cut_stamp(signal, sky, nothing_bad, None, centre, r50, size, provenance)
        if stamp.mask.any():  # part of the stamp lies beyond the image
            counts["edge"] += 1
            continue
        rows.append(stamp)
    if not rows:
        raise DataError("no galaxy found in the Hubble Deep Field image")
    attrs = {
        "source": SOURCE_NAME,
        "label": LABEL,
        "selection": (
            f"deblended sources with a peak {DEBLEND_PEAK_SIGMA:g} sigma above the sky, "
            f"r50 >= {MIN_R50_PX} px, no white saturated core (bright stars), stamp inside "
            "the image"
        ),
        **{f"n_{name}": count for name, count in counts.items()},
    }
    return assemble(rows, attrs)


def deblend(detection: np.ndarray, noise: float) -> np.ndarray:
    """Sources above 3 sigma, split between the significant peaks of a smoothed image.

    A watershed from peaks at least DEBLEND_PEAK_SEPARATION_PX apart and DEBLEND_PEAK_SIGMA
    noise above the sky separates touching neighbours; the 2.5-px smoothing keeps a spiral's
    knots in one galaxy. A detected region without such a peak stays one source.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    regions, count = detect_sources(detection)
    smoothed = ndimage.gaussian_filter(detection, DEBLEND_SMOOTHING_PX)
    peaks = peak_local_max(
        smoothed,
        min_distance=DEBLEND_PEAK_SEPARATION_PX,
        threshold_abs=DEBLEND_PEAK_SIGMA * noise,
        labels=regions,
        exclude_border=False,
    )
    markers = np.zeros(regions.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-smoothed, markers, mask=regions > 0)
    unpeaked = (labels == 0) & (regions > 0)
    labels[unpeaked] = regions[unpeaked] + len(peaks)
    return labels


def measure_source(
    detection: np.ndarray, labels: np.ndarray, label: int, box: tuple[slice, slice]
) -> tuple[np.ndarray, float]:
    """Centre (row, col) and r50 of one source, measured by stamps.measure on its own pixels."""
    rows, cols = (
        slice(max(span.start - MEASURE_MARGIN_PX, 0), min(span.stop + MEASURE_MARGIN_PX, extent))
        for span, extent in zip(box, detection.shape, strict=True)
    )
    local_labels = labels[rows, cols]
    own = grow_segment(local_labels == label) & np.isin(local_labels, (0, label))
    centres, radii = stamps.measure(detection[rows, cols][None], own[None])
    return centres[0] + (rows.start, cols.start), float(radii[0])


def _touches_edge(box: tuple[slice, slice], shape: tuple[int, int]) -> bool:
    return (
        box[0].start == 0 or box[1].start == 0 or box[0].stop == shape[0] or box[1].stop == shape[1]
    )
