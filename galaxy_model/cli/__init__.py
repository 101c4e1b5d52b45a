"""`galaxy-model`: the command-line front end; each subcommand lives in its own module here.

Subcommands are imported only when invoked, so `galaxy-model synth` does not pay for matplotlib.
"""

from __future__ import annotations

import importlib

import click

from mochapy.cli_errors import OneLineErrorGroup

SUBCOMMANDS = {
    "synth": "Generate the built-in style synthetic galaxy sample into an HDF5 dataset.",
    "prepare": "Turn FITS/JPEG/PNG/HDF5 cutouts into a 69x69 galaxy dataset.",
    "cutout": "Cut stamps around catalogue RA/Dec positions in survey FITS images.",
    "montage": "Draw a PNG grid of dataset images (real next to synthetic).",
    "evaluate": "Compare a trained run with the Gaussian baseline on held-out images.",
    "figures": "Draw the poster's figures for a trained run.",
    "encode": "Write g_mu(x) and g_sigma(x) for every image of a dataset.",
}


class LazyGroup(OneLineErrorGroup):
    """A click group whose subcommands are imported from galaxy_model.cli.<name> on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        return importlib.import_module(f"galaxy_model.cli.{name}").command


@click.group(cls=LazyGroup)
@click.version_option(package_name="mochapy")
def main() -> None:
    """galaxy-model: data, baseline, evaluation and figures for the galaxy VAE."""
