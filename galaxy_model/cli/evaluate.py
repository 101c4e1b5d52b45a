"""`galaxy-model evaluate --run DIR --data SPEC [--json OUT.json]`: the poster's numbers."""

from __future__ import annotations

import json
from functools import partial

import click

from galaxy_model import metrics
from galaxy_model.builtin import load
from galaxy_model.cluster import cluster_options, dask_client, one_blas_thread, wants_cluster
from galaxy_model.evaluation import SERSIC_PSF_SIGMA, evaluate
from galaxy_model.model import GalaxyVAE
from mochapy.atomic import write_text_atomically
from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output, files_under


@click.command("evaluate")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="A run directory (from `mochapy run`, or results/galaxy_vae_full).")
@click.option("--data", required=True,
              help="A dataset .h5 file, a sharded directory or builtin:train|heldout|real.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary as JSON.")
@click.option("--force", is_flag=True, help="Replace the --json file if it exists.")
@click.option("--baseline", default="gaussian", show_default=True,
              type=click.Choice(["gaussian", "sersic", "both"]),
              help="Baselines compared (unweighted and ivar-weighted, per band); the headline "
                   "numbers are always the poster's, against the Gaussian.")
@click.option("--psf-sigma", default=SERSIC_PSF_SIGMA, show_default=True,
              type=click.FloatRange(min=0.0), help="The Sérsic fit's Gaussian PSF sd (pixels).")
@cluster_options
@one_line_errors
def command(run_dir: str, data: str, json_out: str | None, force: bool, baseline: str,
            psf_sigma: float, scheduler: str | None, scheduler_file: str | None,
            workers: int | None) -> None:
    """Fit the baselines to every image and compare the VAE with them.

    Sharded DATA or a named cluster: one Dask task per shard (Gaussian and Sérsic fits alike),
    the summary reduced exactly (the same numbers as in one process); with --json, a rerun
    reuses the shards already done."""
    if json_out:
        claim_output(json_out, [data, *files_under(run_dir)], force)
    parts_dir = f"{json_out}.parts" if json_out else None
    baselines = ("gaussian", "sersic") if baseline == "both" else (baseline,)
    if wants_cluster(data, scheduler, scheduler_file, workers):
        from galaxy_model.survey import evaluate_survey, finish_evaluation

        summary = evaluate_survey(partial(dask_client, scheduler, scheduler_file, workers),
                                  run_dir, data, parts_dir, baselines=baselines,
                                  psf_sigma=psf_sigma)
    else:
        with one_blas_thread():
            summary = evaluate(GalaxyVAE.load(run_dir), load(data), label=data,
                               baselines=baselines, psf_sigma=psf_sigma).summary
    click.echo(metrics.markdown_table(summary, f"{run_dir} on {data}"))
    click.echo(metrics.comparisons_table(summary))
    if json_out:
        write_text_atomically(json_out, json.dumps(summary, indent=2))
        click.echo(f"wrote {json_out}")
    if parts_dir and wants_cluster(data, scheduler, scheduler_file, workers):
        finish_evaluation(parts_dir)
