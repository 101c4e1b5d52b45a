"""`galaxy-model figures --run DIR --data SPEC --out DIR`: the poster's figures as PNG."""

from __future__ import annotations

import click

from galaxy_model.builtin import load
from galaxy_model.model import GalaxyVAE
from galaxy_model.report import make_figures
from mochapy.cli_errors import one_line_errors


@click.command("figures")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="A run directory (from `mochapy run`, or results/galaxy_vae_full).")
@click.option("--data", required=True, help="A dataset .h5 file or builtin:train|heldout|real.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the PNG files.")
@click.option("--seed", default=0, show_default=True, help="Which images and samples to show.")
@one_line_errors
def command(run_dir: str, data: str, out_dir: str, seed: int) -> None:
    """Conditionals, t-SNE embedding, latent traversals, training curves, residuals."""
    paths = make_figures(GalaxyVAE.load(run_dir), load(data), out_dir, run_dir=run_dir, seed=seed)
    for path in paths:
        click.echo(f"wrote {path}")
