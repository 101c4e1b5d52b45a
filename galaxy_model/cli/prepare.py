"""`galaxy-model prepare INPUT... --out F.h5|DIR [--size 69] [--bands 1|3] [--shard-size N]`."""

from __future__ import annotations

import warnings
from functools import partial

import click

from galaxy_model.cluster import cluster_options, dask_client
from galaxy_model.shards import DEFAULT_SHARD_SIZE, wants_directory
from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output


@click.command("prepare")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(),
              help="Dataset file (.h5), or a directory of shards (any other name).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input).")
@click.option("--size", default=69, show_default=True, type=click.IntRange(min=8),
              help="Stamp side in pixels.")
@click.option("--bands", default="1", show_default=True, type=click.Choice(["1", "3"]),
              help="1: grey (mean of colour bands); 3: keep RGB (grey inputs are refused).")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help=f"Images per shard of a sharded OUT directory [default: {DEFAULT_SHARD_SIZE}].")
@cluster_options
@one_line_errors
def command(inputs: tuple[str, ...], out: str, size: int, bands: str, force: bool,
            shard_size: int | None, scheduler: str | None, scheduler_file: str | None,
            workers: int | None) -> None:
    """Centre, crop, resample and normalise the galaxies in FITS/JPEG/PNG/HDF5 INPUTs.

    INPUTs are files or directories (searched recursively). Unreadable files are skipped with a
    warning; the output is written only if at least one image was usable. A directory OUT is
    written shard by shard, one Dask task per shard (a rerun finishes an interrupted one).
    """
    if wants_directory(out, shard_size):
        from galaxy_model.survey import prepare_survey

        count, skipped = prepare_survey(partial(dask_client, scheduler, scheduler_file, workers),
                                        list(inputs), out, size, int(bands),
                                        shard_size or DEFAULT_SHARD_SIZE, force)
        for reason in skipped:
            click.echo(f"warning: skipped {reason}", err=True)
        click.echo(f"prepared {count} images, skipped {len(skipped)}, wrote the sharded data "
                   f"set {out}")
        return
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
