"""`galaxy-model evaluate --run DIR --data SPEC [--json OUT.json]`: the poster's numbers."""

from __future__ import annotations

import json

import click

from galaxy_model import metrics
from galaxy_model.builtin import load
from galaxy_model.evaluation import evaluate
from galaxy_model.model import GalaxyVAE
from mochapy.atomic import write_text_atomically
from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output, files_under


@click.command("evaluate")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="A run directory (from `mochapy run`, or results/galaxy_vae_full).")
@click.option("--data", required=True, help="A dataset .h5 file or builtin:train|heldout|real.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary as JSON.")
@click.option("--force", is_flag=True, help="Replace the --json file if it exists.")
@one_line_errors
def command(run_dir: str, data: str, json_out: str | None, force: bool) -> None:
    """Fit the Gaussian baseline to every image and compare the VAE with it."""
    if json_out:
        claim_output(json_out, [data, *files_under(run_dir)], force)
    result = evaluate(GalaxyVAE.load(run_dir), load(data), label=data)
    click.echo(metrics.markdown_table(result.summary, f"{run_dir} on {data}"))
    if json_out:
        write_text_atomically(json_out, json.dumps(result.summary, indent=2))
        click.echo(f"wrote {json_out}")
