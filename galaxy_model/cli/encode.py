"""`galaxy-model encode --run DIR --data F.h5 --out LATENTS.h5`: g_mu(x), g_sigma(x) per image."""

from __future__ import annotations

from functools import partial

import click

from galaxy_model.builtin import load
from galaxy_model.cluster import cluster_options, dask_client, one_blas_thread, wants_cluster
from galaxy_model.latents import encode_dataset, write_latents
from galaxy_model.model import GalaxyVAE
from galaxy_model.shards import DEFAULT_SHARD_SIZE, wants_directory
from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output, files_under


@click.command("encode")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="A run directory (from `mochapy run`, or results/galaxy_vae_full).")
@click.option("--data", required=True,
              help="A dataset .h5 file, a sharded directory or builtin:train|heldout|real.")
@click.option("--out", required=True, type=click.Path(),
              help="Latents .h5 to write, or a directory of latents shards (any other name).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input).")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Images per task and output shard when DATA is one file "
                   f"[default: {DEFAULT_SHARD_SIZE}]; a sharded DATA keeps its shards.")
@cluster_options
@one_line_errors
def command(run_dir: str, data: str, out: str, force: bool, shard_size: int | None,
            scheduler: str | None, scheduler_file: str | None, workers: int | None) -> None:
    """Write the variational posterior q(z|x) = N(g_mu(x), g_sigma(x)) of every image.

    Sharded DATA, a directory OUT or a named cluster: one Dask task per shard (a rerun
    finishes an interrupted directory OUT); else in this process."""
    if wants_directory(out, shard_size) or wants_cluster(data, scheduler, scheduler_file,
                                                         workers):
        from galaxy_model.survey import encode_survey

        count = encode_survey(partial(dask_client, scheduler, scheduler_file, workers), run_dir,
                              data, out, force, shard_size or DEFAULT_SHARD_SIZE)
        click.echo(f"encoded {count} images: {out}")
        return
    claim_output(out, [data, *files_under(run_dir)], force)
    dataset = load(data)
    with one_blas_thread():
        latents = encode_dataset(GalaxyVAE.load(run_dir), dataset)
    write_latents(out, latents, run_dir=run_dir, data=data)
    click.echo(f"encoded {len(dataset)} images into {latents.mean.shape[1]}-d latents: {out}")
