"""`mochapy run NET.yaml` and `mochapy check NET.yaml`: thin layers over load_config/Trainer/Net."""

from __future__ import annotations

import os
import sys

import click

from mochapy.backends import get_backend
from mochapy.cli_errors import OneLineErrorGroup, one_line_errors
from mochapy.config import load_config
from mochapy.net import Net
from mochapy.training import train


@click.group(cls=OneLineErrorGroup)
@click.version_option(package_name="mochapy")
def main() -> None:
    """mochapy: Mocha.jl's layer engine in Python, nets declared in YAML."""


@main.command()
@click.argument("net_yaml", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["cpu", "gpu", "auto"]), default=None,
              help="Override the YAML's backend.")
@click.option("--max-iter", type=click.IntRange(min=0), default=None,
              help="Override solver.max_iter.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/<name>).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its newest valid snapshot (an error if it "
                   "has none).")
@click.option("--allow-changed", is_flag=True,
              help="With --resume: go on although the net, solver or data differ from the "
                   "snapshot's (training.json records what changed).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@one_line_errors
def run(net_yaml: str, backend: str | None, max_iter: int | None, out_dir: str | None,
        resume: bool, allow_changed: bool, quiet: bool) -> None:
    """Train the net declared in NET_YAML.

    A new run needs an --out that holds no run; --resume continues one. Neither ever writes
    over NET_YAML or a file no run wrote."""
    if allow_changed and not resume:
        raise click.UsageError("--allow-changed goes with --resume")
    config = load_config(net_yaml)
    out_dir = out_dir or os.path.join("runs", config.name)
    progress = not quiet and sys.stderr.isatty()  # no bar lines in logs and pipes
    result = train(config, out_dir, backend=backend, max_iter=max_iter, resume=resume,
                   allow_changed=allow_changed, progress=progress)
    click.echo(f"trained {result.iterations} iterations; final loss {result.final_loss:.4f}; "
               f"run directory {result.out_dir}")


@main.command()
@click.argument("net_yaml", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["cpu", "gpu", "auto"]), default="cpu")
@one_line_errors
def check(net_yaml: str, backend: str) -> None:
    """Validate NET_YAML; print layers, blob shapes and the parameter count."""
    config = load_config(net_yaml)
    net = Net(config.name, get_backend(backend, config.dtype), config.layers, seed=config.seed)
    rows = net.describe()
    width = max(len(r[0]) for r in rows)
    kind_width = max(len(r[1]) for r in rows)
    click.echo(f"net {config.name!r} from {net_yaml} (batch size {net.batch_size})")
    for name, kind, shapes, count in rows:
        params = f"{count:,} params" if count else ""
        click.echo(f"  {name:<{width}}  {kind:<{kind_width}}  {shapes:<40} {params}")
    click.echo(f"parameters: {net.n_params:,}")
    click.echo(f"solver: {config.solver.method}, base_lr {config.solver.base_lr}, "
               f"max_iter {config.solver.max_iter}")
