"""`galaxy-model cutout IMAGE.fits... [--weight W.fits]... [--mask M.fits]... --catalog CAT --out
F.h5`: stamps around catalogue positions in survey images (galaxy_model.cutout)."""

from __future__ import annotations

import click

from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output


@click.command("cutout")
@click.argument("images", nargs=-1, required=True)
@click.option("--weight", "weights", multiple=True,
              help="Inverse-variance map of each band, in the order of IMAGES (repeat).")
@click.option("--mask", "masks", multiple=True,
              help="Bad-pixel map of each band (nonzero = bad), in the order of IMAGES (repeat).")
@click.option("--catalog", required=True, help="CSV or FITS table with RA and Dec in degrees.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Dataset file (.h5).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input).")
@click.option("--r50-multiple", default=11.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Stamp side in half-light radii, measured around each position.")
@click.option("--pixel-scale", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Instead: a fixed output pixel scale in arcsec (stamp side = size x scale).")
@click.option("--size", default=69, show_default=True, type=click.IntRange(min=8),
              help="Stamp side in pixels.")
@one_line_errors
def command(images: tuple[str, ...], weights: tuple[str, ...], masks: tuple[str, ...],
            catalog: str, out: str, force: bool, r50_multiple: float, pixel_scale: float | None,
            size: int) -> None:
    """Cut a stamp around every RA/Dec of CATALOG in the band IMAGES (one per band, 1 or 3;
    FILE.fits[EXT] picks an extension of a multi-extension file), resampled to SIZE x SIZE with
    the weight map's inverse variance carried along and pixels beyond the image masked."""
    from galaxy_model.cutout import Sizing, cutout_survey, split_extension
    from galaxy_model.dataset import write_dataset

    inputs = [split_extension(spec)[0] for spec in (*images, *weights, *masks)] + [catalog]
    claim_output(out, inputs, force)
    result = cutout_survey(list(images), catalog, list(weights), list(masks),
                           Sizing(r50_multiple=r50_multiple, pixel_scale=pixel_scale), size,
                           progress=True)
    dataset = result.dataset
    write_dataset(out, dataset)
    masked = 0 if dataset.mask is None else int(dataset.mask.any(axis=(1, 2, 3)).sum())
    click.echo(f"wrote {len(dataset)} stamps ({dataset.bands} band"
               f"{'s' if dataset.bands > 1 else ''}, {masked} with masked pixels) to {out}")
