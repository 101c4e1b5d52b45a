"""`galaxy-model synth --n N --out F.h5|DIR [--seed S] [--bands 1|3] [--shard-size N]`."""

from __future__ import annotations

import time
from functools import partial

import click

from galaxy_model.cluster import cluster_options, dask_client
from galaxy_model.shards import DEFAULT_SHARD_SIZE, wants_directory
from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output


@click.command("synth")
@click.option("--n", "count", required=True, type=click.IntRange(min=1),
              help="Number of galaxies.")
@click.option("--out", required=True, type=click.Path(),
              help="Dataset file (.h5), or a directory of shards (any other name).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed; the same seed gives the same images.")
@click.option("--bands", default="1", show_default=True, type=click.Choice(["1", "3"]),
              help="1: one band (r); 3: g, r, i colour images.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help=f"Images per shard of a sharded OUT directory [default: {DEFAULT_SHARD_SIZE}].")
@cluster_options
@one_line_errors
def command(count: int, out: str, seed: int, bands: str, force: bool, shard_size: int | None,
            scheduler: str | None, scheduler_file: str | None, workers: int | None) -> None:
    """Render COUNT synthetic survey galaxies (69 x 69 stamps) into a dataset file, or into a
    directory of shards written in parallel on Dask (a rerun finishes an interrupted one)."""
    if wants_directory(out, shard_size):
        from galaxy_model.survey import synth_survey

        started = time.perf_counter()
        synth_survey(partial(dask_client, scheduler, scheduler_file, workers), count, out, seed,
                     int(bands), shard_size or DEFAULT_SHARD_SIZE, force)
        click.echo(f"wrote {count} synthetic galaxies (seed {seed}) in "
                   f"{time.perf_counter() - started:.1f} s to the sharded data set {out}")
        return
    claim_output(out, force=force)
    from galaxy_model.dataset import write_dataset
    from galaxy_model.synth import synthesize

    started = time.perf_counter()
    dataset = synthesize(count, seed=seed, bands=int(bands), progress=True)
    write_dataset(out, dataset)
    seconds = time.perf_counter() - started
    click.echo(
        f"wrote {count} synthetic galaxies ({bands} band{'s' if bands == '3' else ''}, "
        f"seed {seed}) in {seconds:.1f} s to {out}"
    )
