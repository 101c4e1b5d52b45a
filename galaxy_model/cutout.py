"""Stamps from survey images by catalogue: the step from a calibrated FITS image (one file, or one
extension, per band), its weight map (inverse variance) and bad-pixel mask, plus a table of RA/Dec
positions, to a galaxy dataset that `evaluate` and `encode` read.

Each object's stamp is centred on its catalogue position (through the image's celestial WCS,
astropy.wcs) and spans, by choice:
    a fixed multiple of its half-light radius (`r50_multiple`, 11 as in the built-in data), the
        radius measured on the band sum in a box around the position (the curve of growth of the
        central source, galaxy_model.stamps), or
    a fixed pixel scale (`pixel_scale`, arcsec per output pixel): the same sky area for every one.
The stamp is resampled to size x size pixels by prepare.cut_stamp (area-averaging when shrinking),
which also carries the variance (1/weight) through the resampling and masks output pixels whose
area lies mostly outside the image or on bad input pixels. Normalisation is the built-in data's
(stamps.normalise), so the dataset's ivar is scale^2 / variance of each output pixel.

Bands must share one pixel grid (the same WCS and shape): survey images of one tile do. Every
problem is a one-line DataError naming the file, band or catalogue row.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from galaxy_model import stamps
from galaxy_model.dataset import VALID_BANDS, GalaxyDataset
from galaxy_model.prepare import assemble, clipped_sky_noise, cut_stamp
from mochapy.errors import DataError

RA_COLUMNS = ("ra", "ra_deg", "raj2000", "ra_icrs", "alpha_j2000", "alpha")
DEC_COLUMNS = ("dec", "dec_deg", "dej2000", "decj2000", "de_icrs", "dec_icrs", "delta_j2000",
               "delta")
ID_COLUMNS = ("id", "objid", "object_id", "name")
MEASURE_BOX_PX = 101  # side of the box around each position where r50 is measured
GRID_TOLERANCE_PX = 0.01  # bands whose WCS map a pixel further apart than this disagree


@dataclass(frozen=True)
class Band:
    """One band's image with its WCS, variance (None without a weight map) and bad pixels."""

    label: str  # "file.fits[ext]", for messages and provenance
    data: np.ndarray  # float64 (H, W), bad pixels 0
    wcs: object  # astropy.wcs.WCS, celestial
    variance: np.ndarray | None
    bad: np.ndarray  # bool (H, W)


@dataclass(frozen=True)
class Sizing:
    """How large a stamp is: r50_multiple half-light radii, or size pixels of pixel_scale."""

    r50_multiple: float = stamps.STAMP_SIDE_IN_R50
    pixel_scale: float | None = None  # arcsec per output pixel; set: a fixed scale

    def describe(self, size: int) -> str:
        if self.pixel_scale is not None:
            return f"fixed pixel scale {self.pixel_scale:g} arcsec ({size} px stamps)"
        return f"{self.r50_multiple:g} half-light radii, measured on the band sum"


@dataclass
class CutoutResult:
    """The dataset plus what was measured to cut it (input pixel units)."""

    dataset: GalaxyDataset
    centres: np.ndarray  # (N, 2) row, column of each catalogue position in the input image
    side: np.ndarray  # (N,) stamp side in input pixels
    r50: np.ndarray  # (N,) measured half-light radius in input pixels (NaN at a fixed scale)


def split_extension(spec: str) -> tuple[str, int | str | None]:
    """'file.fits[2]' -> ('file.fits', 2); 'file.fits[SCI]' -> ('file.fits', 'SCI')."""
    if spec.endswith("]") and "[" in spec:
        path, _, ext = spec[:-1].rpartition("[")
        return path, int(ext) if ext.strip().isdigit() else ext.strip()
    return spec, None


def _read_hdu(spec: str, what: str) -> tuple[np.ndarray, object, str]:
    """The 2-D image of `spec` (its [ext], else the first HDU holding one), header and label."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    path, ext = split_extension(spec)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such {what} file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, memmap=False) as hdus:
                if ext is None:
                    ext = next((i for i, hdu in enumerate(hdus) if hdu.is_image
                                and hdu.data is not None and hdu.data.squeeze().ndim == 2), None)
                    if ext is None:
                        raise DataError(f"{path}: no 2-D image HDU in this {what} file")
                try:
                    hdu = hdus[ext]
                except (KeyError, IndexError):
                    raise DataError(f"{path}: no extension {ext!r}") from None
                if not hdu.is_image or hdu.data is None or hdu.data.squeeze().ndim != 2:
                    raise DataError(f"{path}[{ext}]: not a 2-D image")
                data = np.asarray(hdu.data, dtype=np.float64).squeeze()
                header = hdu.header.copy()
    except DataError:
        raise
    except Exception as exc:  # astropy reports damaged files with many exception types
        raise DataError(f"{path}: unreadable FITS {what} ({' '.join(str(exc).split())})") from None
    return data, header, f"{path}[{ext}]"


def read_band(image: str, weight: str | None = None, mask: str | None = None,
              band: int = 1) -> Band:
    """One band: its image (NaN pixels bad), celestial WCS, weight (ivar) and mask (nonzero bad)."""
    from astropy.wcs import WCS

    data, header, label = _read_hdu(image, "image")
    where = f"band {band} ({label})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=2)
    except Exception as exc:
        raise DataError(f"{where}: unreadable WCS ({' '.join(str(exc).split())})") from None
    if not wcs.has_celestial:
        raise DataError(f"{where}: no celestial WCS (CTYPE RA---/DEC-- keywords) to place RA/Dec")
    bad = ~np.isfinite(data)
    variance = None
    if weight is not None:
        weights, _, weight_label = _read_hdu(weight, "weight")
        _check_shape(weights, data, f"band {band} weight ({weight_label})", label)
        invalid = ~np.isfinite(weights) | (weights < 0)
        if invalid.any():
            row, col = np.argwhere(invalid)[0]
            raise DataError(
                f"band {band} weight ({weight_label}): {int(invalid.sum())} negative or NaN "
                f"inverse variances (first at pixel x={col}, y={row}); use 0 for no information"
            )
        bad |= weights == 0
        variance = np.where(weights > 0, 1.0 / np.where(weights > 0, weights, 1.0), 0.0)
    if mask is not None:
        flags, _, mask_label = _read_hdu(mask, "mask")
        _check_shape(flags, data, f"band {band} mask ({mask_label})", label)
        bad |= np.nan_to_num(flags, nan=1.0) != 0
    if bad.all():
        raise DataError(f"{where}: every pixel is bad (NaN, weight 0 or masked)")
    if variance is not None:  # a finite stand-in where masked; those pixels stay masked
        variance = np.where(bad, np.median(variance[~bad]), variance)
    return Band(label=label, data=np.where(bad, 0.0, data), wcs=wcs.celestial,
                variance=variance, bad=bad)


def _check_shape(array: np.ndarray, data: np.ndarray, where: str, image_label: str) -> None:
    if array.shape != data.shape:
        raise DataError(f"{where}: shape {array.shape} differs from the image {image_label}'s "
                        f"{data.shape}")


def check_same_grid(bands: Sequence[Band]) -> None:
    """Every band must map pixels to the sky as band 1 does (same shape, same WCS)."""
    first = bands[0]
    height, width = first.data.shape
    probe_x = np.array([0, width - 1, 0, width - 1, (width - 1) / 2])
    probe_y = np.array([0, 0, height - 1, height - 1, (height - 1) / 2])
    world = first.wcs.pixel_to_world_values(probe_x, probe_y)
    for index, band in enumerate(bands[1:], start=2):
        if band.data.shape != first.data.shape:
            raise DataError(f"band {index} ({band.label}): shape {band.data.shape} differs from "
                            f"band 1 ({first.label}) {first.data.shape}; bands must share a grid")
        x, y = band.wcs.world_to_pixel_values(*world)
        offset = np.hypot(x - probe_x, y - probe_y)
        if not np.all(offset <= GRID_TOLERANCE_PX):
            raise DataError(
                f"band {index} ({band.label}): its WCS disagrees with band 1 ({first.label}) by "
                f"{np.nanmax(offset):.3g} pixels; bands must share one pixel grid"
            )


def read_catalog(path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """RA and Dec in degrees and an id per row from a CSV or FITS table."""
    from astropy.table import Table

    if not os.path.isfile(path):
        raise DataError(f"{path}: no such catalogue file")
    lower = path.lower()
    fmt = "ascii.csv" if lower.endswith((".csv", ".csv.gz")) else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:
        raise DataError(f"{path}: unreadable catalogue ({' '.join(str(exc).split())})") from None
    if len(table) == 0:
        raise DataError(f"{path}: the catalogue has no rows")
    columns = {name.lower(): name for name in table.colnames}
    ra_name = next((columns[c] for c in RA_COLUMNS if c in columns), None)
    dec_name = next((columns[c] for c in DEC_COLUMNS if c in columns), None)
    if ra_name is None or dec_name is None:
        raise DataError(f"{path}: no RA/Dec columns (looked for {RA_COLUMNS[0]}/{DEC_COLUMNS[0]} "
                        f"and the like; found {', '.join(table.colnames)})")
    ra, dec = (_degrees(table[name], path, name) for name in (ra_name, dec_name))
    id_name = next((columns[c] for c in ID_COLUMNS if c in columns), None)
    ids = [str(v) for v in table[id_name]] if id_name else [str(i) for i in range(len(table))]
    return ra, dec, ids


def _degrees(column, path: str, name: str) -> np.ndarray:
    unit = getattr(column, "unit", None)
    try:
        values = np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)
        if unit is not None and str(unit) not in ("", "deg"):
            values = (values * unit).to_value("deg")
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: column {name!r} is not in degrees ({exc})") from None
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(f"{path} row {int(np.flatnonzero(bad)[0])}: {name} is missing or not a "
                        "number")
    return values


def _pixel_positions(band: Band, ra: np.ndarray, dec: np.ndarray, ids: list[str],
                     catalog: str) -> np.ndarray:
    """(N, 2) row, column of every position; a DataError names a row outside the image."""
    x, y = band.wcs.world_to_pixel_values(ra, dec)
    height, width = band.data.shape
    inside = (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    if not inside.all():
        row = int(np.flatnonzero(~inside)[0])
        raise DataError(
            f"{catalog} row {row} (id {ids[row]}): RA {ra[row]:.6f}, Dec {dec[row]:.6f} lies "
            f"outside {band.label} (pixel x={x[row]:.1f}, y={y[row]:.1f}; image {width}x{height})"
        )
    return np.stack([y, x], axis=1)


def _boxes(signal: np.ndarray, centres: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, side, side) windows of `signal` around each centre (zero beyond the image) and each
    centre in its window's pixel coordinates."""
    half = side // 2
    nearest = np.rint(centres).astype(int)
    padded = np.pad(signal, half)
    rows = nearest[:, 0, None] + np.arange(side)
    cols = nearest[:, 1, None] + np.arange(side)
    boxes = padded[rows[:, :, None], cols[:, None, :]]
    return boxes, centres - nearest + half


def measure_r50(signal: np.ndarray, noise: float, centres: np.ndarray,
                box: int = MEASURE_BOX_PX) -> np.ndarray:
    """Half-light radius (N,) in pixels of the source at each centre of a sky-subtracted image."""
    boxes, local = _boxes(signal, centres, box)
    segments = stamps.segment(boxes, np.full(len(boxes), noise))
    return stamps.half_light_radius(np.where(segments, boxes, 0.0), local)


def cut_catalog(
    bands: Sequence[Band],
    ra: np.ndarray,
    dec: np.ndarray,
    ids: list[str],
    catalog: str,
    sizing: Sizing = Sizing(),
    size: int = stamps.STAMP_SIZE,
    progress: bool = False,
) -> CutoutResult:
    """Cut, resample and normalise a stamp around every catalogue position (see module doc)."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    if len(bands) not in VALID_BANDS:
        raise DataError(f"{len(bands)} band images given; a dataset holds 1 or 3 bands")
    check_same_grid(bands)
    centres = _pixel_positions(bands[0], ra, dec, ids, catalog)
    sky_noise = [clipped_sky_noise(b.data[~b.bad]) for b in bands]
    sky = np.array([level for level, _ in sky_noise])
    signal = np.stack([np.where(b.bad, 0.0, b.data - level) for b, level in zip(bands, sky,
                                                                             strict=True)])
    bad = np.stack([b.bad for b in bands])
    variance = None
    if all(b.variance is not None for b in bands):
        variance = np.stack([b.variance for b in bands])
    elif any(b.variance is not None for b in bands):
        raise DataError("give a weight map for every band or for none")
    if sizing.pixel_scale is not None:
        input_scale = float(np.mean(proj_plane_pixel_scales(bands[0].wcs))) * 3600.0
        side = np.full(len(ra), size * sizing.pixel_scale / input_scale)
        r50 = np.full(len(ra), np.nan)
    else:
        detection_noise = float(np.sqrt(sum(noise**2 for _, noise in sky_noise)))
        r50 = measure_r50(signal.sum(axis=0), detection_noise, centres)
        side = sizing.r50_multiple * r50
    rows = []
    for index in tqdm(range(len(ra)), desc="cutouts", unit="stamp",
                      disable=None if progress else True):
        provenance = (f"{bands[0].label} id={ids[index]} ra={ra[index]:.7f} "
                      f"dec={dec[index]:.7f}")
        rows.append(cut_stamp(signal, sky, bad, variance, centres[index],
                              side[index] / stamps.STAMP_SIDE_IN_R50, size, provenance))
    attrs = {
        "source": "galaxy_model.cutout",
        "created_by": "galaxy_model.cutout.cut_catalog",
        "images": ",".join(b.label for b in bands),
        "catalog": catalog,
        "sizing": sizing.describe(size),
    }
    dataset = assemble(rows, attrs)
    if sizing.pixel_scale is not None:
        dataset.attrs.pop("stamp_side_in_r50", None)
        dataset.attrs["pixel_scale_arcsec"] = sizing.pixel_scale
    else:
        dataset.attrs["stamp_side_in_r50"] = sizing.r50_multiple
    return CutoutResult(dataset=dataset, centres=centres, side=side, r50=r50)


def cutout_survey(
    images: Sequence[str],
    catalog: str,
    weights: Sequence[str] = (),
    masks: Sequence[str] = (),
    sizing: Sizing = Sizing(),
    size: int = stamps.STAMP_SIZE,
    progress: bool = False,
) -> CutoutResult:
    """Read the band images (with their weight and mask files, one per band, in band order) and
    the catalogue, then cut_catalog."""
    for name, given in (("weight", weights), ("mask", masks)):
        if given and len(given) != len(images):
            raise DataError(f"{len(given)} {name} files for {len(images)} band images; give one "
                            "per band, in the same order")
    bands = [
        read_band(image, weights[i] if weights else None, masks[i] if masks else None, i + 1)
        for i, image in enumerate(images)
    ]
    ra, dec, ids = read_catalog(catalog)
    return cut_catalog(bands, ra, dec, ids, catalog, sizing, size, progress)
