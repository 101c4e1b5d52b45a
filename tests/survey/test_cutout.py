"""galaxy-model cutout: small FITS images with a known WCS and galaxies rendered by our synth,
cut out by catalogue; position (sub-pixel), flux and ivar checked; bad input refused in one line
with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from click.testing import CliRunner

from galaxy_model.cli import main
from galaxy_model.cutout import Sizing, cutout_survey
from galaxy_model.dataset import read_dataset
from galaxy_model.synth import synthesize
from mochapy.errors import DataError

SHAPE = (160, 200)  # rows, columns
PIXEL_ARCSEC = 0.25
NOISE = 0.002


def make_wcs(shift: float = 0.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [100.5 + shift, 80.5]
    wcs.wcs.cdelt = [-PIXEL_ARCSEC / 3600.0, PIXEL_ARCSEC / 3600.0]
    return wcs


def synth_galaxies(count: int = 2, bands: int = 1) -> np.ndarray:
    """Sky-subtracted synthetic galaxies (count, bands, 69, 69) in raw units."""
    ds = synthesize(count, seed=5, bands=bands)
    return ds.data * ds.scale[:, None, None, None]


def flux_centre(stamp: np.ndarray) -> np.ndarray:
    """(row, column) of the flux-weighted centre of (H, W), a first moment that area-averaging
    keeps."""
    rows, cols = np.indices(stamp.shape)
    return np.array([(stamp * rows).sum(), (stamp * cols).sum()]) / stamp.sum()


@pytest.fixture
def survey(tmp_path: Path) -> dict:
    """A 1-band image with two synth galaxies (no noise), a constant weight map, a catalogue at
    their flux-weighted centres, and the truth."""
    image = np.zeros(SHAPE)
    galaxies = synth_galaxies()[:, 0]
    corners = [(10, 20), (70, 115)]
    truth = []
    for galaxy, (row, col) in zip(galaxies, corners, strict=True):
        image[row:row + 69, col:col + 69] += galaxy
        truth.append(np.array([row, col]) + flux_centre(galaxy))
    truth = np.array(truth)
    wcs = make_wcs()
    header = wcs.to_header()
    paths = {"image": tmp_path / "image.fits", "weight": tmp_path / "weight.fits",
             "catalog": tmp_path / "cat.csv"}
    fits.PrimaryHDU(image, header=header).writeto(paths["image"])
    fits.PrimaryHDU(np.full(SHAPE, NOISE**-2), header=header).writeto(paths["weight"])
    ra, dec = wcs.pixel_to_world_values(truth[:, 1], truth[:, 0])
    Table({"ID": ["a", "b"], "RA": ra, "DEC": dec}).write(paths["catalog"], format="ascii.csv")
    return {**{k: str(v) for k, v in paths.items()}, "truth": truth, "flux": galaxies.sum((1, 2)),
            "wcs": wcs, "header": header, "image_data": image}


def test_stamps_are_centred_on_the_catalogue_position_and_keep_the_flux(survey):
    """At a fixed scale the stamp covers each pasted synth stamp whole: the flux-weighted centre
    sits at the stamp centre to a tenth of an output pixel, and the flux (times the pixel area) is
    kept."""
    scale = PIXEL_ARCSEC * 101 / 69  # stamp side 101 input pixels
    result = cutout_survey([survey["image"]], survey["catalog"], [survey["weight"]],
                           sizing=Sizing(pixel_scale=scale))
    ds = result.dataset
    assert ds.data.shape == (2, 1, 69, 69)
    np.testing.assert_allclose(result.centres, survey["truth"], atol=1e-6)
    step = 101 / 69
    for index in range(2):
        raw = ds.data[index, 0] * ds.scale[index] + ds.offset[index, 0]
        np.testing.assert_allclose(flux_centre(raw), [34.0, 34.0], atol=0.1)
        assert raw.sum() * step**2 == pytest.approx(survey["flux"][index], rel=0.02)
    assert ds.mask is None or not ds.mask.any()
    assert "id=a" in ds.provenance[0] and ds.attrs["pixel_scale_arcsec"] == scale


def test_ivar_is_the_weight_map_carried_through_the_resampling(survey):
    """ivar is in normalised units. An output pixel averages s x s input pixels at s times the
    input scale: off the input grid its ivar lies between s^2 and (2s)^2 times the weight (the
    fractional weights of the pixels it straddles); on the grid it is exactly s^2 times it: a
    stamp at the input scale centred on a pixel centre is a copy (ivar = weight), one at twice the
    scale centred on a pixel corner averages 2 x 2 pixels (ivar = 4 weight)."""
    for factor in (1, 2):
        result = cutout_survey([survey["image"]], survey["catalog"], [survey["weight"]],
                               sizing=Sizing(pixel_scale=PIXEL_ARCSEC * factor))
        ds = result.dataset
        raw_ivar = ds.ivar / ds.scale[:, None, None, None] ** 2
        used = np.ones(ds.data.shape, bool) if ds.mask is None else ds.mask == 0
        assert np.all(ds.ivar[~used] == 0) and used.mean() > 0.5
        ratio = raw_ivar[used] * NOISE**2 / factor**2
        assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 4 + 1e-4
    # exactly aligned grids: a catalogue position on a pixel centre (scale 1), a pixel corner (2)
    wcs = survey["wcs"]
    for factor, offset in ((1, 0.0), (2, 0.5)):
        ra, dec = wcs.pixel_to_world_values(np.array([100.0 + offset]), np.array([80.0 + offset]))
        path = Path(survey["catalog"]).with_name(f"aligned{factor}.csv")
        Table({"ra": ra, "dec": dec}).write(path, format="ascii.csv")
        ds = cutout_survey([survey["image"]], str(path), [survey["weight"]],
                           sizing=Sizing(pixel_scale=PIXEL_ARCSEC * factor)).dataset
        raw_ivar = ds.ivar / ds.scale[:, None, None, None] ** 2
        np.testing.assert_allclose(raw_ivar, factor**2 * NOISE**-2, rtol=1e-4)
        if factor == 1:
            window = survey["image_data"][80 - 34:80 + 35, 100 - 34:100 + 35]
            raw = ds.data[0, 0] * ds.scale[0] + ds.offset[0, 0]
            np.testing.assert_allclose(raw, window, atol=1e-5)


def test_r50_sizing_matches_the_built_in_convention(survey):
    result = cutout_survey([survey["image"]], survey["catalog"], sizing=Sizing())
    assert result.dataset.ivar is None
    np.testing.assert_allclose(result.side, 11 * result.r50)
    assert np.all((result.r50 > 1) & (result.r50 < 20))
    assert result.dataset.attrs["stamp_side_in_r50"] == 11


def test_stamps_leaving_the_image_are_masked(survey, tmp_path):
    wcs = survey["wcs"]
    ra, dec = wcs.pixel_to_world_values(np.array([3.0]), np.array([150.0]))
    Table({"ra": ra, "dec": dec}).write(tmp_path / "edge.csv", format="ascii.csv")
    ds = cutout_survey([survey["image"]], str(tmp_path / "edge.csv"), [survey["weight"]],
                       sizing=Sizing(pixel_scale=PIXEL_ARCSEC)).dataset
    # output pixel (i, j) is input pixel (150 - 34 + i, 3 - 34 + j): outside for j < 31, i >= 44
    rows, cols = np.indices((69, 69))
    np.testing.assert_array_equal(ds.mask[0, 0], (cols < 31) | (rows >= 44))
    assert np.all(ds.ivar[ds.mask == 1] == 0) and np.all(ds.ivar[ds.mask == 0] > 0)


def test_three_band_files_and_a_multi_extension_file(survey, tmp_path):
    """Three bands as three files, or as three extensions of one file: the same stamps."""
    galaxies = synth_galaxies(1, bands=3)[0]
    cube = np.zeros((3, *SHAPE))
    cube[:, 40:109, 60:129] = galaxies
    header = survey["header"]
    names = []
    for band, plane in enumerate(cube):
        names.append(str(tmp_path / f"band{band}.fits"))
        fits.PrimaryHDU(plane, header=header).writeto(names[-1])
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(p, header=header, name=f"B{i}")
                                  for i, p in enumerate(cube)]
    fits.HDUList(hdus).writeto(tmp_path / "mef.fits")
    from_files = cutout_survey(names, survey["catalog"], sizing=Sizing(pixel_scale=0.3))
    mef = tmp_path / "mef.fits"
    from_mef = cutout_survey([f"{mef}[1]", f"{mef}[B1]", f"{mef}[3]"], survey["catalog"],
                             sizing=Sizing(pixel_scale=0.3))
    assert from_files.dataset.data.shape == (2, 3, 69, 69)
    np.testing.assert_array_equal(from_files.dataset.data, from_mef.dataset.data)


def test_cli_writes_a_dataset_that_refuses_to_be_overwritten(survey, tmp_path):
    out = tmp_path / "stamps.h5"
    args = ["cutout", survey["image"], "--weight", survey["weight"], "--catalog",
            survey["catalog"], "--out", str(out), "--pixel-scale", "0.3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    ds = read_dataset(out)
    assert ds.data.shape == (2, 1, 69, 69) and ds.ivar is not None
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "exists" in again.output and "--force" in again.output
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0


def _write(path: Path, data: np.ndarray, header=None) -> str:
    fits.PrimaryHDU(data, header=header).writeto(path)
    return str(path)


def bad_inputs(survey: dict, tmp_path: Path) -> dict:
    header = survey["header"]
    negative = np.full(SHAPE, 1.0)
    negative[5, 7] = -1.0
    nan = np.full(SHAPE, 1.0)
    nan[9, 3] = np.nan
    far = Table({"ra": [150.0, 151.0], "dec": [2.0, 2.0]})
    far.write(tmp_path / "far.csv", format="ascii.csv")
    Table({"x": [1.0], "y": [2.0]}).write(tmp_path / "nocols.csv", format="ascii.csv")
    plain = _write(tmp_path / "nowcs.fits", survey["image_data"])
    shifted = _write(tmp_path / "shifted.fits", survey["image_data"],
                     make_wcs(shift=3.0).to_header())
    image, cat = survey["image"], survey["catalog"]
    return {
        "negative ivar": ([image, "--weight", _write(tmp_path / "neg.fits", negative, header)],
                          cat, r"band 1 weight .*neg\.fits.*negative or NaN.*x=7, y=5"),
        "NaN ivar": ([image, "--weight", _write(tmp_path / "nan.fits", nan, header)],
                     cat, r"nan\.fits.*negative or NaN.*x=3, y=9"),
        "mask shape": ([image, "--mask", _write(tmp_path / "m.fits", np.zeros((5, 5)), header)],
                       cat, r"band 1 mask .*m\.fits.*shape \(5, 5\)"),
        "no WCS": ([plain], cat, r"band 1 .*nowcs\.fits.*no celestial WCS"),
        "outside": ([image], str(tmp_path / "far.csv"), r"far\.csv row 1 .*outside"),
        "no RA/Dec": ([image], str(tmp_path / "nocols.csv"), r"nocols\.csv: no RA/Dec columns"),
        "WCS disagree": ([image, shifted, image], cat,
                         r"band 2 .*shifted\.fits.*WCS disagrees.*band 1"),
    }


@pytest.mark.parametrize("case", ["negative ivar", "NaN ivar", "mask shape", "no WCS", "outside",
                                  "no RA/Dec", "WCS disagree"])
def test_bad_input_is_one_line_naming_the_culprit_and_nothing_is_written(case, survey, tmp_path):
    images, catalog, pattern = bad_inputs(survey, tmp_path)[case]
    out = tmp_path / "stamps.h5"
    result = CliRunner().invoke(main, ["cutout", *images, "--catalog", catalog, "--out", str(out)])
    assert result.exit_code != 0
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert __import__("re").search(pattern, message), message
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "stamps" in p.name]


def test_api_errors_are_data_errors(survey):
    with pytest.raises(DataError, match="2 weight files for 1 band images"):
        cutout_survey([survey["image"]], survey["catalog"], [survey["weight"]] * 2)
