"""`galaxy-model encode --run DIR --data F.h5 --out LATENTS.h5`: g_mu(x), g_sigma(x) per image."""

from __future__ import annotations

import click

from galaxy_model.builtin import load
from galaxy_model.latents import encode_dataset, write_latents
from galaxy_model.model import GalaxyVAE
from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output, files_under


@click.command("encode")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="A run directory (from `mochapy run`, or results/galaxy_vae_full).")
@click.option("--data", required=True, help="A dataset .h5 file or builtin:train|heldout|real.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Latents .h5 to write.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input).")
@one_line_errors
def command(run_dir: str, data: str, out: str, force: bool) -> None:
    """Write the variational posterior q(z|x) = N(g_mu(x), g_sigma(x)) of every image."""
    claim_output(out, [data, *files_under(run_dir)], force)
    dataset = load(data)
    latents = encode_dataset(GalaxyVAE.load(run_dir), dataset)
    write_latents(out, latents, run_dir=run_dir, data=data)
    click.echo(f"encoded {len(dataset)} images into {latents.mean.shape[1]}-d latents: {out}")
