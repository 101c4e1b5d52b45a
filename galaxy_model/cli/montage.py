"""`galaxy-model montage DATA... --out F.png [--n 16]`: real and synthetic stamps side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mochapy.cli_errors import one_line_errors
from mochapy.outputs import claim_output

if TYPE_CHECKING:
    from galaxy_model.dataset import GalaxyDataset

BUILTIN_PREFIX = "builtin:"


@click.command("montage")
@click.argument("data", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (never an input).")
@click.option("--n", "n_per_set", default=16, show_default=True, type=click.IntRange(min=1),
              help="Images drawn from each dataset.")
@click.option("--seed", default=0, show_default=True, help="Which images are drawn.")
@one_line_errors
def command(data: tuple[str, ...], out: str, n_per_set: int, seed: int, force: bool) -> None:
    """Draw N images of each DATA (a dataset .h5 or builtin:train|heldout|real) into one PNG."""
    claim_output(out, data, force)
    from galaxy_model.montage import montage

    montage([load_labelled(spec) for spec in data], n_per_set, out, seed=seed)
    click.echo(f"wrote {out}")


def load_labelled(spec: str) -> tuple[str, GalaxyDataset]:
    """(label, dataset) for a path or builtin:SPLIT; the dataset's own label wins if it has one."""
    if spec.startswith(BUILTIN_PREFIX):
        from galaxy_model.builtin import load

        dataset = load(spec)
    else:
        from galaxy_model.dataset import read_dataset

        dataset = read_dataset(spec)
    return str(dataset.attrs.get("label") or spec), dataset
