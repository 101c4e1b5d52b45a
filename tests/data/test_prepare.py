"""`galaxy-model prepare`: format readers, centring, normalisation, skipping bad files, the CLI."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner
from PIL import Image

from galaxy_model import stamps
from galaxy_model.cli.prepare import command as prepare_command
from galaxy_model.dataset import read_dataset
from galaxy_model.hubble import hubble_image
from galaxy_model.prepare import PrepareWarning, prepare
from galaxy_model.readers import read_fits, read_hdf5, read_images, read_picture
from mochapy.errors import DataError

SKY = 10.0
NOISE = 1.0


def exponential(shape, centre, r50, amplitude, axis_ratio=0.6, angle=0.5):
    """An inclined exponential disc with half-light radius r50 (in the major-axis sense)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    dy, dx = rows - centre[0], cols - centre[1]
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = (-dx * np.sin(angle) + dy * np.cos(angle)) / axis_ratio
    return amplitude * np.exp(-1.678 * np.hypot(along, across) / r50)


def field(shape=(120, 140), seed=0, galaxy=(70.3, 82.6), r50=6.0):
    """Sky + noise + a galaxy off centre + a fainter neighbour + a bright star in a corner."""
    rng = np.random.default_rng(seed)
    image = SKY + rng.normal(0, NOISE, shape)
    image += exponential(shape, galaxy, r50, 100.0)
    image += exponential(shape, (22.0, 30.0), 3.0, 40.0)
    image += exponential(shape, (shape[0] - 8, 8), 0.8, 20000.0, axis_ratio=1.0)
    return image


def write_fits(path, data, **header):
    hdu = fits.PrimaryHDU(data)
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path, overwrite=True)
    return str(path)


def stamp_centroid(stamp, radius=15.0):
    """Flux-weighted centre of the positive pixels within `radius` of the stamp centre."""
    size = stamp.shape[-1]
    rows, cols = np.mgrid[0:size, 0:size]
    middle = (size - 1) / 2
    weight = np.clip(stamp, 0, None) * (np.hypot(rows - middle, cols - middle) <= radius)
    return (weight * rows).sum() / weight.sum(), (weight * cols).sum() / weight.sum()


# ------------------------------------------------------------------------------------ FITS


def test_fits_nan_inf_are_masked_and_filled_with_local_sky(tmp_path):
    image = field().astype(np.float32)
    image[5:8, 100:110] = np.nan
    image[60, 20] = np.inf
    raw = read_fits(write_fits(tmp_path / "nan.fits", image))
    assert raw.data.shape == (1, 120, 140)
    assert np.isfinite(raw.data).all()
    assert raw.mask[0, 5:8, 100:110].all() and raw.mask[0, 60, 20] == 1
    assert raw.mask.sum() == 31
    assert abs(raw.data[0, 6, 105] - SKY) < 0.5  # the local sky, not zero or the galaxy
    assert raw.provenance.endswith("nan.fits[HDU 0]")


def test_fits_bscale_bzero_and_blank(tmp_path):
    counts = np.arange(64 * 64, dtype=np.int16).reshape(64, 64) % 500
    counts[10, 10] = -32768
    path = write_fits(tmp_path / "scaled.fits", counts, BSCALE=2.0, BZERO=100.0, BLANK=-32768)
    raw = read_fits(path)
    assert raw.data[0, 0, 5] == pytest.approx(2.0 * 5 + 100.0)
    assert raw.data[0, 20, 30] == pytest.approx(2.0 * counts[20, 30] + 100.0)
    assert raw.mask[0, 10, 10] == 1 and raw.mask.sum() == 1
    assert np.isfinite(raw.data).all()


def test_fits_image_in_second_hdu_with_mask_and_ivar_extensions(tmp_path):
    image = field().astype(np.float32)
    bad = np.zeros(image.shape, np.int16)
    bad[60:64, 60:64] = 4  # inside the galaxy's stamp
    hdus = fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(image, name="SCI"),
        fits.ImageHDU(bad, name="DQ"),
        fits.ImageHDU(np.full(image.shape, 1 / NOISE**2, np.float32), name="IVAR"),
    ])
    path = str(tmp_path / "multi.fits")
    hdus.writeto(path)
    raw = read_fits(path)
    assert raw.provenance.endswith("multi.fits[HDU 1]")
    assert raw.mask[0, 60:64, 60:64].all() and raw.mask.sum() == 16
    assert raw.ivar[0, 0, 0] == pytest.approx(1.0) and raw.ivar[0, 61, 61] == 0

    ds, summary = prepare([path])
    assert summary.read == 1 and ds.ivar is not None
    # 4x4 bad input pixels, magnified ~1.4x (the stamp spans 11 circular r50 of a 0.6 axis-ratio
    # disc, about 50 px for 69 stamp pixels)
    assert 16 <= ds.mask.sum() <= 49 and (ds.ivar[ds.mask == 1] == 0).all()
    sky_pixels = stamps.border_pixels(ds.data[0, 0])
    unmasked = stamps.border_pixels(ds.mask[0, 0]) == 0
    predicted = np.median(1 / stamps.border_pixels(ds.ivar[0, 0])[unmasked])
    # the propagated variance matches the scatter of the sky in the normalised stamp
    assert np.var(sky_pixels[unmasked]) == pytest.approx(predicted, rel=0.3)


def test_fits_cube_of_three_planes_and_length_one_axes(tmp_path):
    plane = field().astype(np.float32)
    cube = np.stack([plane, 2 * plane, 3 * plane])
    raw = read_fits(write_fits(tmp_path / "cube.fits", cube))
    assert raw.data.shape == (3, 120, 140)
    squeezed = read_fits(write_fits(tmp_path / "axes.fits", plane[None, None]))
    assert squeezed.data.shape == (1, 120, 140)
    with pytest.raises(DataError, match="neither 2-D nor a cube of 3 planes"):
        read_fits(write_fits(tmp_path / "four.fits", np.stack([plane] * 4)))


def test_cube_with_an_empty_plane_is_skipped(tmp_path):
    plane = field().astype(np.float32)
    cube = np.stack([plane, np.full_like(plane, np.nan), plane])
    path = write_fits(tmp_path / "holey.fits", cube)
    for bands, reason in ((3, "band 2 has no finite pixels"), (1, "no finite pixels")):
        with pytest.warns(PrepareWarning, match=reason), pytest.raises(DataError):
            prepare([path], bands=bands)


def test_gzipped_fits_is_read(tmp_path):
    path = write_fits(tmp_path / "galaxy.fits.gz", field().astype(np.float32))
    ds, summary = prepare([str(tmp_path)])
    assert summary.read == 1 and ds.provenance[0] == f"{path}[HDU 0]"


# ---------------------------------------------------------------------------- JPEG and PNG


def grey_picture(seed=0):
    image = field(seed=seed)
    return np.clip(image / image.max() * 255 * 4, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_grey_and_rgb_pictures(tmp_path, suffix):
    grey = grey_picture()
    Image.fromarray(grey).save(tmp_path / f"grey{suffix}")
    rgb = np.stack([grey, grey // 2, grey // 3], axis=-1)
    Image.fromarray(rgb).save(tmp_path / f"rgb{suffix}")
    read_grey = read_picture(str(tmp_path / f"grey{suffix}"))
    read_rgb = read_picture(str(tmp_path / f"rgb{suffix}"))
    assert read_grey.data.shape == (1, 120, 140) and read_rgb.data.shape == (3, 120, 140)
    for raw in (read_grey, read_rgb):
        assert raw.data.min() >= 0 and raw.data.max() <= 1 and not raw.framed
    tolerance = 1e-6 if suffix == ".png" else 0.02  # JPEG: lossy, judged on average
    assert np.abs(read_grey.data[0] - grey / 255).mean() <= tolerance
    assert np.abs(read_rgb.data[1] - (grey // 2) / 255).mean() <= tolerance


def test_rgba_palette_and_16_bit_png(tmp_path):
    grey = grey_picture()
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 7)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    rgba_read = read_picture(str(tmp_path / "rgba.png"))
    assert rgba_read.data.shape == (3, 120, 140)
    assert np.allclose(rgba_read.data[0], grey / 255)
    assert read_picture(str(tmp_path / "palette.png")).data.shape[0] == 3
    deep = read_picture(str(tmp_path / "deep.png"))
    assert deep.data.shape == (1, 120, 140) and np.allclose(deep.data[0], grey / 255, atol=1e-6)


def test_galaxy_zoo_layout_is_centre_crop_downscaled_and_not_remeasured(tmp_path):
    size = 424
    galaxy = exponential((size, size), (211.5, 211.5), 20.0, 200.0) + 15
    # a much brighter star off centre: a re-measured image would be centred elsewhere
    galaxy += exponential((size, size), (150, 260), 1.0, 5000.0, axis_ratio=1.0)
    rgb = np.clip(np.stack([galaxy, 0.8 * galaxy, 0.6 * galaxy], -1), 0, 255).astype(np.uint8)
    path = tmp_path / "100008.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    raw = read_picture(str(path))
    assert raw.framed and raw.data.shape == (3, 69, 69)
    decoded = np.moveaxis(np.asarray(Image.open(path), np.float32) / 255, -1, 0)
    expected = decoded[:, 108:315, 108:315].reshape(3, 69, 3, 69, 3).mean(axis=(2, 4))
    assert np.allclose(raw.data, expected, atol=1e-6)

    ds, _ = prepare([str(path)], bands=1)
    # same geometry as the crop; normalisation is invertible back to the grey crop
    assert np.allclose(ds.denormalise(0)[0], expected.mean(axis=0), atol=1e-5)
    assert ds.provenance == [str(path)]


# ------------------------------------------------------------------------------------ HDF5


@pytest.mark.parametrize(
    "shape, name, bands",
    [
        ((40, 48), "data", 1),
        ((3, 40, 48), "images", 1),
        ((3, 1, 40, 48), "data", 1),
        ((3, 3, 40, 48), "data", 3),
        ((3, 40, 48, 3), "cutouts", 3),
        ((3, 40, 48, 1), "nested/cutouts", 1),
    ],
)
def test_hdf5_layouts(tmp_path, shape, name, bands):
    rng = np.random.default_rng(1)
    array = rng.normal(size=shape).astype(np.float32)
    path = str(tmp_path / "arrays.h5")
    with h5py.File(path, "w") as handle:
        handle.create_dataset(name, data=array)
    images = list(read_hdf5(path))
    rows = 1 if len(shape) == 2 else shape[0]
    assert len(images) == rows
    assert all(image.data.shape == (bands, 40, 48) for image in images)
    first = array if len(shape) == 2 else array[0]
    if len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3):
        first = np.moveaxis(first, -1, 0)
    assert np.allclose(images[0].data.reshape(first.shape if first.ndim == 3 else (40, 48)), first)
    assert images[-1].provenance.endswith(f"arrays.h5:{name}[{rows - 1}]")


def test_hdf5_ambiguous_or_bad_layout_is_refused(tmp_path):
    path = str(tmp_path / "two.h5")
    with h5py.File(path, "w") as handle:
        handle["a"] = np.zeros((2, 20, 20))
        handle["b"] = np.zeros((2, 20, 20))
    with pytest.raises(DataError, match="found 2 datasets"):
        list(read_hdf5(path))
    bad = str(tmp_path / "bad.h5")
    with h5py.File(bad, "w") as handle:
        handle["data"] = np.zeros((2, 20, 20, 5))
    with pytest.raises(DataError, match=r"bad.h5:/data: array of shape \(2, 20, 20, 5\)"):
        list(read_hdf5(bad))


def test_hdf5_rows_become_dataset_rows_and_a_constant_row_is_skipped(tmp_path):
    cube = np.stack([field(seed=seed) for seed in range(3)]).astype(np.float32)
    cube[1] = 5.0
    path = str(tmp_path / "rows.h5")
    with h5py.File(path, "w") as handle:
        handle["images"] = cube
    with pytest.warns(PrepareWarning, match=r"rows.h5:images\[1\]: constant image"):
        ds, summary = prepare([path])
    assert len(ds) == 2 and summary.read == 2 and len(summary.skipped) == 1
    assert ds.provenance == [f"{path}:images[0]", f"{path}:images[2]"]


# ------------------------------------------------------------------------------- centring


def test_centres_the_off_centre_galaxy_not_the_star_or_neighbour(tmp_path):
    path = write_fits(tmp_path / "scene.fits", field().astype(np.float32))
    ds, _ = prepare([path])
    stamp = ds.data[0, 0]
    centre_row, centre_col = stamp_centroid(stamp)
    assert abs(centre_row - 34) < 1 and abs(centre_col - 34) < 1
    assert stamp[34, 34] > 0.5  # the galaxy's core, not the sky
    # the stamp spans STAMP_SIDE_IN_R50 half-light radii: r50 is 69 / 11 stamp pixels
    _, r50 = stamps.measure(ds.data[:, 0])
    assert r50[0] == pytest.approx(69 / stamps.STAMP_SIDE_IN_R50, rel=0.15)


def test_normalisation_is_stored_and_invertible(tmp_path):
    image = field().astype(np.float32)
    path = write_fits(tmp_path / "scene.fits", image)
    ds, _ = prepare([path])
    raw = ds.denormalise(0)[0]
    assert np.median(stamps.border_pixels(raw)) == pytest.approx(SKY, abs=0.3)
    assert raw.max() == pytest.approx(SKY + 100, rel=0.2)  # the galaxy's peak, area-averaged
    assert np.median(stamps.border_pixels(ds.data[0, 0])) == pytest.approx(0, abs=1e-6)
    assert ds.attrs["stamp_side_in_r50"] == stamps.STAMP_SIDE_IN_R50
    assert ds.attrs["source"] == "prepare"


def test_galaxy_near_the_edge_is_padded_with_masked_sky(tmp_path):
    image = field(galaxy=(60.0, 14.0), r50=5.0).astype(np.float32)
    ds, _ = prepare([write_fits(tmp_path / "edge.fits", image)])
    assert ds.mask is not None and ds.mask[0, 0, :, :5].all()
    assert np.abs(ds.denormalise(0)[0, 30:40, :3] - SKY).max() < 1.0


def test_a_real_image_crop_goes_through_prepare(tmp_path):
    # a 160x160 crop of the bundled XDF around its large face-on spiral (x~124, y~400),
    # deliberately off centre and with neighbours
    crop = hubble_image()[:, 330:490, 60:220]
    path = tmp_path / "xdf_spiral.png"
    Image.fromarray((np.moveaxis(crop, 0, -1) * 255).round().astype(np.uint8)).save(path)
    ds, summary = prepare([str(path)], bands=3)
    assert summary.read == 1 and ds.data.shape == (1, 3, 69, 69)
    assert np.isfinite(ds.data).all()
    grey = ds.data[0].mean(axis=0)
    centre_row, centre_col = stamp_centroid(grey, radius=10)
    assert abs(centre_row - 34) < 2 and abs(centre_col - 34) < 2
    assert grey[30:39, 30:39].mean() > 0.3 > np.abs(stamps.border_pixels(grey)).mean()


# ----------------------------------------------------------------------- bands and failures


def test_bands_conversion(tmp_path):
    grey = grey_picture()
    Image.fromarray(np.stack([grey, grey // 2, grey // 4], -1)).save(tmp_path / "rgb.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgb_path, grey_path = str(tmp_path / "rgb.png"), str(tmp_path / "grey.png")
    three, _ = prepare([rgb_path], bands=3)
    one, _ = prepare([rgb_path], bands=1)
    assert three.data.shape == (1, 3, 69, 69) and one.data.shape == (1, 1, 69, 69)
    with pytest.warns(PrepareWarning, match="grey.png: one band, cannot make the 3 bands"):
        ds, summary = prepare([rgb_path, grey_path], bands=3)
    assert len(ds) == 1 and summary.skipped == [f"{grey_path}: one band, cannot make the 3 bands "
                                                "requested"]


def write_bad_files(directory):
    """Empty, truncated, corrupt, all-NaN and constant files; returns their names."""
    good = field().astype(np.float32)
    write_fits(directory / "good.fits", good)
    (directory / "empty.fits").write_bytes(b"")
    whole = (directory / "good.fits").read_bytes()
    (directory / "truncated.fits").write_bytes(whole[: len(whole) // 2])
    (directory / "garbage.png").write_bytes(b"\x89PNG not really a picture" * 10)
    Image.fromarray(grey_picture()).save(directory / "whole.jpg")
    jpeg = (directory / "whole.jpg").read_bytes()
    (directory / "whole.jpg").unlink()
    (directory / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    write_fits(directory / "nan.fits", np.full((50, 50), np.nan, np.float32))
    write_fits(directory / "flat.fits", np.full((50, 50), 3.0, np.float32))
    (directory / "notes.txt").write_text("ignored: not an image suffix")
    return ["empty.fits", "truncated.fits", "garbage.png", "cut.jpg", "nan.fits", "flat.fits"]


def test_bad_files_are_skipped_with_warnings_naming_them(tmp_path):
    bad = write_bad_files(tmp_path)
    with pytest.warns(PrepareWarning) as caught:
        ds, summary = prepare([str(tmp_path)])
    messages = [str(warning.message) for warning in caught]
    for name in bad:
        assert any(os.path.join(str(tmp_path), name) in message for message in messages), name
    assert len(ds) == 1 and ds.provenance[0].endswith("good.fits[HDU 0]")
    assert summary.read == 1 and summary.files == 7 and len(summary.skipped) == len(bad)
    assert any("empty file" in reason for reason in summary.skipped)
    assert any("no finite pixels" in reason for reason in summary.skipped)
    assert any("constant image" in reason for reason in summary.skipped)


def test_nothing_readable_raises(tmp_path):
    (tmp_path / "empty.fits").write_bytes(b"")
    with pytest.warns(PrepareWarning), pytest.raises(DataError, match="empty.fits: empty file"):
        prepare([str(tmp_path)])
    with pytest.warns(PrepareWarning), pytest.raises(DataError, match="no such file"):
        prepare([str(tmp_path / "missing.fits")])
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(DataError, match="no input files found"):
        prepare([str(tmp_path / "nothing_here")])


def test_read_images_dispatches_on_suffix(tmp_path):
    path = write_fits(tmp_path / "x.fts", field().astype(np.float32))
    assert [image.data.shape for image in read_images(path)] == [(1, 120, 140)]
    (tmp_path / "x.tif").write_bytes(b"II*\x00")
    with pytest.raises(DataError, match="unsupported file type"):
        list(read_images(str(tmp_path / "x.tif")))


# --------------------------------------------------------------------------------------- CLI


def test_cli_end_to_end(tmp_path):
    inputs = tmp_path / "inputs"
    (inputs / "deeper").mkdir(parents=True)
    write_bad_files(inputs)
    Image.fromarray(grey_picture(seed=3)).save(inputs / "deeper" / "other.png")
    out = tmp_path / "prepared.h5"
    result = CliRunner().invoke(prepare_command, [str(inputs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"read 2 images from 8 files, skipped 6, wrote {out}" in result.output
    assert "warning: skipped" in result.output and "truncated.fits" in result.output
    ds = read_dataset(out)
    assert ds.data.shape == (2, 1, 69, 69)
    assert ds.provenance == [
        f"{inputs}/deeper/other.png",  # directories are read in sorted path order
        f"{inputs}/good.fits[HDU 0]",
    ]
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


def test_cli_writes_nothing_when_nothing_is_readable(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    out = tmp_path / "prepared.h5"
    result = CliRunner().invoke(prepare_command, [str(tmp_path / "empty.png"), "--out", str(out)])
    assert result.exit_code == 2
    assert "error: no usable image among 1 input(s)" in result.output
    assert "Traceback" not in result.output
    assert os.listdir(tmp_path) == ["empty.png"]


def test_cli_size_and_bands_options(tmp_path):
    grey = grey_picture()
    Image.fromarray(np.stack([grey, grey, grey // 2], -1)).save(tmp_path / "rgb.png")
    out = tmp_path / "small.h5"
    result = CliRunner().invoke(
        prepare_command, [str(tmp_path / "rgb.png"), "--out", str(out), "--size", "32",
                          "--bands", "3"]
    )
    assert result.exit_code == 0, result.output
    assert read_dataset(out).data.shape == (1, 3, 32, 32)
    refused = CliRunner().invoke(prepare_command, [str(tmp_path), "--out", str(out),
                                                   "--bands", "2"])
    assert refused.exit_code == 2
