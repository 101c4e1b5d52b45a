"""Read FITS, JPEG/PNG and HDF5 inputs into float32 (C, H, W) images with provenance.

Every reader yields `RawImage`s whose pixels are finite: pixels without a valid measurement (NaN,
inf, FITS BLANK, a MASK/DQ extension) are flagged in `mask` and filled with the local sky median,
so centring and resampling never see a NaN while the dataset still records which pixels were
invented. A file that cannot be read at all raises a DataError naming it; `prepare` turns that
into a warning and goes on with the other files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mochapy.errors import DataError
from mochapy.limits import check_array, check_hdf5_links, check_hdf5_node

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HDF5_SUFFIXES = (".h5", ".hdf5")
SUPPORTED_SUFFIXES = FITS_SUFFIXES + IMAGE_SUFFIXES + HDF5_SUFFIXES

# Galaxy Zoo (Kaggle) JPEGs are 424x424 and centred on the galaxy, with the field of view scaled to
# the galaxy's Petrosian radius. The winning pipeline cropped the central 207x207 and downscaled 3x
# to 69x69; the galaxy then spans the stamp much as STAMP_SIDE_IN_R50 prescribes for our own
# cutouts, so these images are used as they are and are not re-measured.
GALAXY_ZOO_SIDE = 424
GALAXY_ZOO_CROP = 207
GALAXY_ZOO_DOWNSCALE = 3

SKY_FILL_TILE = 32  # side of the tiles whose median fills masked pixels ("local" sky)
MIN_SIDE = 8  # smaller images cannot hold a resolved galaxy and its surrounding sky


@dataclass
class RawImage:
    """One input image before centring: finite pixels, the provenance, and optional mask/ivar.

    `framed` marks an image that already is a galaxy-centred stamp on the STAMP_SIDE_IN_R50
    scale (Galaxy Zoo layout), so prepare resamples it without measuring it again.
    """

    data: np.ndarray
    provenance: str
    mask: np.ndarray | None = None
    ivar: np.ndarray | None = None
    framed: bool = False


def is_supported(path: str) -> bool:
    """True if the file name ends in one of the suffixes prepare reads."""
    return path.lower().endswith(SUPPORTED_SUFFIXES)


def read_images(path: str) -> Iterator[RawImage]:
    """Yield every image in one input file (one for FITS and JPEG/PNG, one per row for HDF5)."""
    lower = path.lower()
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file")
    if lower.endswith(FITS_SUFFIXES):
        yield read_fits(path)
    elif lower.endswith(IMAGE_SUFFIXES):
        yield read_picture(path)
    elif lower.endswith(HDF5_SUFFIXES):
        yield from read_hdf5(path)
    else:
        raise DataError(f"{path}: unsupported file type (expected one of {SUPPORTED_SUFFIXES})")


def check_usable(image: RawImage) -> None:
    """Refuse images that hold nothing to fit: too small, no valid pixel, or constant."""
    _, height, width = image.data.shape
    if min(height, width) < MIN_SIDE:
        raise DataError(f"{image.provenance}: image is {height}x{width}, too small for a galaxy")
    valid = np.ones(image.data.shape, bool) if image.mask is None else image.mask == 0
    if not valid.any():
        raise DataError(f"{image.provenance}: no finite pixels")
    empty_bands = np.flatnonzero(~valid.any(axis=(1, 2)))
    if empty_bands.size:
        raise DataError(f"{image.provenance}: band {empty_bands[0] + 1} has no finite pixels")
    values = image.data[valid]
    if values.min() == values.max():
        raise DataError(f"{image.provenance}: constant image (every pixel is {values[0]:g})")


def finite_image(
    data: np.ndarray,
    provenance: str,
    extra_mask: np.ndarray | None = None,
    ivar: np.ndarray | None = None,
) -> RawImage:
    """Flag non-finite (and extra-masked, or ivar <= 0) pixels and fill them with local sky.

    An image without any valid pixel comes back all zeros and fully masked; check_usable
    refuses it, so one bad row does not end the reading of an HDF5 file.
    """
    data = np.asarray(data, dtype=np.float64)
    bad = ~np.isfinite(data)
    if extra_mask is not None:
        bad |= extra_mask.astype(bool)
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=np.float64)
        bad |= ~np.isfinite(ivar) | (ivar <= 0)
        ivar = np.where(bad, 0.0, ivar).astype(np.float32)
    filled = np.stack(
        [fill_with_local_sky(band, bad_band) for band, bad_band in zip(data, bad, strict=True)]
    )
    return RawImage(
        data=filled.astype(np.float32),
        provenance=provenance,
        mask=bad.astype(np.uint8) if bad.any() else None,
        ivar=ivar,
    )


def fill_with_local_sky(band: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace bad pixels by the median of the valid pixels in their SKY_FILL_TILE tile.

    A tile with too few valid pixels takes the median of the whole band, so large masked
    regions (chip gaps, the NaN border of a mosaic) get the sky level rather than noise.
    """
    if not bad.any():
        return band
    if bad.all():
        return np.zeros_like(band)
    filled = band.copy()
    band_median = float(np.median(band[~bad]))
    height, width = band.shape
    for y0 in range(0, height, SKY_FILL_TILE):
        for x0 in range(0, width, SKY_FILL_TILE):
            tile = (slice(y0, y0 + SKY_FILL_TILE), slice(x0, x0 + SKY_FILL_TILE))
            tile_bad = bad[tile]
            if not tile_bad.any():
                continue
            good = band[tile][~tile_bad]
            enough = good.size >= tile_bad.size // 4
            filled[tile][tile_bad] = np.median(good) if enough else band_median
    return filled


# ---------------------------------------------------------------------------------------- FITS


def read_fits(path: str) -> RawImage:
    """The primary HDU if it holds an image, else the first image extension.

    astropy applies BSCALE/BZERO and turns BLANK into NaN; an extension named MASK or DQ flags
    pixels (non-zero = bad) and one named IVAR gives the inverse variance, when shaped alike.
    """
    from astropy.io import fits  # lazily: the GPU machine has no astropy
    from astropy.utils.exceptions import AstropyWarning

    try:
        with warnings.catch_warnings():
            # astropy warns before it fails on a damaged file; the DataError says it once
            warnings.simplefilter("ignore", AstropyWarning)
            data, companions, index = _fits_contents(fits, path)
    except DataError:
        raise
    except Exception as exc:  # astropy reports corrupt files with many exception types
        raise DataError(f"{path}: unreadable FITS file ({_reason(exc)})") from exc
    provenance = f"{path}[HDU {index}]"
    cube = _fits_planes(data, provenance)
    mask = _companion(companions, ("MASK", "DQ"), data.shape, cube.shape, provenance)
    ivar = _companion(companions, ("IVAR",), data.shape, cube.shape, provenance)
    return finite_image(cube, provenance, extra_mask=mask, ivar=ivar)


def max_image_pixels() -> int:
    """The most pixels one image may decompress to: GALAXY_MODEL_MAX_PIXELS, else Pillow's
    decompression-bomb limit (about 89 million), which pictures already obey."""
    from PIL import Image

    value = os.environ.get("GALAXY_MODEL_MAX_PIXELS", "").strip()
    try:
        return int(float(value)) if value else int(Image.MAX_IMAGE_PIXELS or 2**62)
    except ValueError:
        raise DataError(f"GALAXY_MODEL_MAX_PIXELS={value!r} is not a number") from None


def _check_fits_sizes(hdus, path: str) -> None:
    """Every image HDU's size from its header (for a compressed one: the size it decompresses
    to), against the pixel limit and the memory, before any data is read."""
    limit = max_image_pixels()
    for index, hdu in enumerate(hdus):
        shape = tuple(int(n) for n in (hdu.shape or ())) if hdu.is_image else ()
        pixels = int(np.prod(shape, dtype=object)) if shape else 0
        if pixels > limit:
            raise DataError(f"{path}: HDU {index} declares {pixels:,} pixels {shape}, more than "
                            f"the {limit:,} an image may have (GALAXY_MODEL_MAX_PIXELS)")
        if shape:
            check_array(shape, 8, f"{path}: HDU {index}")  # read as float64 at most


def _fits_contents(fits, path: str) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """The chosen image, the other image HDUs by EXTNAME, and the chosen HDU's index."""
    with fits.open(path, memmap=False, lazy_load_hdus=False) as hdus:
        _check_fits_sizes(hdus, path)
        index = _first_image_hdu(hdus)
        if index is None:
            raise DataError(f"{path}: no image HDU")
        data = np.asarray(hdus[index].data)
        companions = {
            str(hdu.header.get("EXTNAME", "")).upper(): np.asarray(hdu.data)
            for hdu in hdus[1:]
            if hdu.is_image and hdu.data is not None
        }
    return data, companions, index


def _first_image_hdu(hdus) -> int | None:
    for index, hdu in enumerate(hdus):
        if hdu.is_image and hdu.data is not None and sum(n > 1 for n in hdu.data.shape) >= 2:
            return index
    return None


def _fits_planes(data: np.ndarray, provenance: str) -> np.ndarray:
    """(H, W) -> (1, H, W); a 3-plane cube -> 3 bands; length-1 axes are dropped."""
    squeezed = data.squeeze()
    if squeezed.ndim == 2:
        return squeezed[None]
    if squeezed.ndim == 3 and squeezed.shape[0] == 3:
        return squeezed
    raise DataError(
        f"{provenance}: image of shape {data.shape} is neither 2-D nor a cube of 3 planes"
    )


def _companion(companions, names, image_shape, cube_shape, provenance) -> np.ndarray | None:
    for name in names:
        if name in companions:
            array = companions[name]
            if array.shape != image_shape:
                raise DataError(
                    f"{provenance}: {name} extension has shape {array.shape}, "
                    f"the image has {image_shape}"
                )
            return array.reshape(cube_shape)
    return None


# ------------------------------------------------------------------------------ JPEG and PNG

# Pillow modes that convert to grey or RGB before the pixels are read; alpha is dropped.
_PICTURE_MODES = {"1": "L", "LA": "L", "La": "L", "RGBA": "RGB", "RGBa": "RGB", "PA": "RGB",
                  "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_PICTURE_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0,
                       np.dtype(np.int32): 65535.0}  # 16-bit PNGs may decode to mode "I"


def read_picture(path: str) -> RawImage:
    """Grey or RGB JPEG/PNG scaled to [0, 1]; a 424x424 image is taken as Galaxy Zoo layout."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            picture.load()  # decode now, so a truncated file fails here
            if picture.mode == "P":
                picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
            target = _PICTURE_MODES.get(picture.mode, picture.mode)
            if target != picture.mode:
                picture = picture.convert(target)
            pixels = np.asarray(picture)
    except Exception as exc:  # Pillow reports corrupt files with many exception types
        raise DataError(f"{path}: unreadable image ({_reason(exc)})") from exc
    full_scale = _PICTURE_FULL_SCALE.get(pixels.dtype, 1.0)
    planes = pixels.astype(np.float32) / full_scale
    planes = planes[None] if planes.ndim == 2 else np.moveaxis(planes, -1, 0)
    if planes.shape[0] not in (1, 3):
        raise DataError(f"{path}: {planes.shape[0]} colour channels (expected grey or RGB)")
    if planes.shape[1:] == (GALAXY_ZOO_SIDE, GALAXY_ZOO_SIDE):
        image = finite_image(galaxy_zoo_stamp(planes), path)
        image.framed = True
        return image
    return finite_image(planes, path)


def galaxy_zoo_stamp(planes: np.ndarray) -> np.ndarray:
    """Central 207x207 of a 424x424 image, averaged over 3x3 blocks to 69x69."""
    start = (GALAXY_ZOO_SIDE - GALAXY_ZOO_CROP) // 2
    crop = planes[:, start : start + GALAXY_ZOO_CROP, start : start + GALAXY_ZOO_CROP]
    side = GALAXY_ZOO_CROP // GALAXY_ZOO_DOWNSCALE
    blocks = crop.reshape(
        crop.shape[0], side, GALAXY_ZOO_DOWNSCALE, side, GALAXY_ZOO_DOWNSCALE
    )
    return blocks.mean(axis=(2, 4))


# ------------------------------------------------------------------------------------- HDF5


def read_hdf5(path: str) -> Iterator[RawImage]:
    """One image per row of the dataset `data` or `images` (or the file's only dataset).

    Accepted layouts: (H, W), (N, H, W), (N, C, H, W) and (N, H, W, C) with C in {1, 3}. Datasets
    named `mask` and `ivar` of the same shape (a prepared galaxy dataset) are carried along.
    """
    import h5py

    try:
        handle = h5py.File(path, "r")
    except Exception as exc:  # h5py reports corrupt files as OSError or ValueError
        raise DataError(f"{path}: unreadable HDF5 file ({_reason(exc)})") from exc
    with handle:
        check_hdf5_links(handle, path)
        images = _hdf5_images(handle, path)
        layout = hdf5_layout(images.shape, f"{path}:{images.name}")
        # read one row (an image) at a time, or the whole of a single image
        check_hdf5_node(handle, images.name, path, 0 if layout.single else 1)
        companions = {
            name: handle[name]
            for name in ("mask", "ivar")
            if isinstance(handle.get(name), h5py.Dataset) and handle[name].shape == images.shape
        }
        for row in range(layout.rows):
            provenance = f"{path}:{images.name.lstrip('/')}[{row}]"
            try:
                data = layout.row(images, row)
                mask = layout.row(companions["mask"], row) if "mask" in companions else None
                ivar = layout.row(companions["ivar"], row) if "ivar" in companions else None
            except Exception as exc:  # a damaged chunk surfaces as OSError or ValueError
                raise DataError(f"{provenance}: unreadable row ({_reason(exc)})") from exc
            yield finite_image(data, provenance, extra_mask=mask, ivar=ivar)


def _hdf5_images(handle, path: str):
    import h5py

    for name in ("data", "images"):
        if isinstance(handle.get(name), h5py.Dataset):
            return handle[name]
    datasets: list = []

    def collect(_: str, node) -> None:
        if isinstance(node, h5py.Dataset):
            datasets.append(node)

    handle.visititems(collect)
    if len(datasets) == 1:
        return datasets[0]
    raise DataError(
        f"{path}: expected a dataset named 'data' or 'images' (or a single dataset), "
        f"found {len(datasets)} datasets"
    )


@dataclass(frozen=True)
class Hdf5Layout:
    """How rows of an HDF5 image array map to (C, H, W) images."""

    rows: int
    single: bool  # one (H, W) image
    channels_last: bool

    def row(self, dataset, index: int) -> np.ndarray:
        """Image `index` as (C, H, W) float64."""
        array = np.asarray(dataset[()] if self.single else dataset[index], dtype=np.float64)
        if self.single or array.ndim == 2:
            return array[None]
        return np.moveaxis(array, -1, 0) if self.channels_last else array


def hdf5_layout(shape: tuple[int, ...], where: str) -> Hdf5Layout:
    """Decide the layout from the shape; (N, C, H, W) wins when both readings fit."""
    if len(shape) == 2:
        return Hdf5Layout(rows=1, single=True, channels_last=False)
    if len(shape) == 3:
        return Hdf5Layout(rows=shape[0], single=False, channels_last=False)
    if len(shape) == 4 and shape[1] in (1, 3):
        return Hdf5Layout(rows=shape[0], single=False, channels_last=False)
    if len(shape) == 4 and shape[3] in (1, 3):
        return Hdf5Layout(rows=shape[0], single=False, channels_last=True)
    raise DataError(
        f"{where}: array of shape {shape} is not (H,W), (N,H,W), (N,C,H,W) or (N,H,W,C) "
        "with C in {1, 3}"
    )


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
