"""`galaxy-model figures --run DIR --data SPEC --out DIR`: the poster's figures as PNG."""

from __future__ import annotations

import os

import click

from galaxy_model.builtin import load
from galaxy_model.model import GalaxyVAE
from galaxy_model.report import make_figures
from mochapy.cli_errors import one_line_errors
from mochapy.outputs import atomic_directory, files_under


@click.command("figures")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="A run directory (from `mochapy run`, or results/galaxy_vae_full).")
@click.option("--data", required=True, help="A dataset .h5 file or builtin:train|heldout|real.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the PNG files (new or empty).")
@click.option("--force", is_flag=True,
              help="Write into a folder that holds files, replacing those of the same names.")
@click.option("--seed", default=0, show_default=True, help="Which images and samples to show.")
@one_line_errors
def command(run_dir: str, data: str, out_dir: str, seed: int, force: bool) -> None:
    """Conditionals, t-SNE embedding, latent traversals, training curves, residuals.

    Every figure is drawn first; they appear in OUT together, or none does."""
    inputs = [data, *files_under(run_dir)]
    with atomic_directory(out_dir, inputs, force) as staging:
        paths = make_figures(GalaxyVAE.load(run_dir), load(data), staging, run_dir=run_dir,
                             seed=seed)
    for path in paths:
        click.echo(f"wrote {os.path.join(out_dir, os.path.relpath(path, staging))}")
