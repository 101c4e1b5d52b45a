"""`galaxy-model prepare INPUT... --out F.h5 [--size 69] [--bands 1|3]`."""

from __future__ import annotations

import warnings

import click

from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output


@click.command("prepare")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Dataset file (.h5).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input).")
@click.option("--size", default=69, show_default=True, type=click.IntRange(min=8),
              help="Stamp side in pixels.")
@click.option("--bands", default="1", show_default=True, type=click.Choice(["1", "3"]),
              help="1: grey (mean of colour bands); 3: keep RGB (grey inputs are refused).")
@one_line_errors
def command(inputs: tuple[str, ...], out: str, size: int, bands: str, force: bool) -> None:
    """Centre, crop, resample and normalise the galaxies in FITS/JPEG/PNG/HDF5 INPUTs.

    INPUTs are files or directories (searched recursively). Unreadable files are skipped with a
    warning; the output is written only if at least one image was usable.
    """
    from galaxy_model.dataset import write_dataset
    from galaxy_model.prepare import PrepareSummary, PrepareWarning, expand_inputs, prepare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrepareWarning)
        claim_output(out, [*inputs, *expand_inputs(list(inputs), PrepareSummary())], force)
        dataset, summary = prepare(list(inputs), size=size, bands=int(bands), progress=True)
    for reason in summary.skipped:
        click.echo(f"warning: skipped {reason}", err=True)
    write_dataset(out, dataset)
    click.echo(summary.describe(out))
