"""`galaxy-model synth --n N --out F.h5 [--seed S] [--bands 1|3]`."""

from __future__ import annotations

import time

import click

from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output


@click.command("synth")
@click.option("--n", "count", required=True, type=click.IntRange(min=1),
              help="Number of galaxies.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Dataset file (.h5).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed; the same seed gives the same images.")
@click.option("--bands", default="1", show_default=True, type=click.Choice(["1", "3"]),
              help="1: one band (r); 3: g, r, i colour images.")
@one_line_errors
def command(count: int, out: str, seed: int, bands: str, force: bool) -> None:
    """Render COUNT synthetic survey galaxies (69 x 69 stamps) into a dataset file."""
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
