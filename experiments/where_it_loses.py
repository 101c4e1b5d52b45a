"""Where a run loses to the Gaussian fit on a built-in synthetic split: its wins by the drawn
properties of the scenes (morphology, PSF width and S/N by thirds, neighbours and stars).

    python experiments/where_it_loses.py --run results/galaxy_vae_full --data builtin:heldout
        --out results/galaxy_vae_full/where_it_loses
    python experiments/where_it_loses.py --stage runs/galaxy_vae_gz/stage1-mean
        --iteration 100000 [--data builtin:gz-heldout] [--out DIR] [--force]

The model is a finished run (--run) or one kept snapshot of a stage (--stage, --iteration: a
running stage can be read). It is evaluated with galaxy_model.evaluation on the whole split; the
properties of each image's scene come from the generator (scene_parameters with the split's n,
seed and population: the same draws the images were rendered from), so only the built-in
synthetic splits qualify. Writes where_it_loses.json (with what it was measured on) and
where_it_loses.md; an existing result is replaced only with --force.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator

import numpy as np

from galaxy_model import builtin
from galaxy_model.evaluation import Evaluation, evaluate
from galaxy_model.model import GalaxyVAE
from galaxy_model.populations import MORPHOLOGIES
from galaxy_model.synth.generate import scene_parameters
from mochapy.atomic import write_text_atomically
from mochapy.cli_errors import exit_on_user_error
from mochapy.errors import ConfigError, MochaError
from mochapy.runs import kept_snapshots, load_snapshot

THIRDS = ("lowest third", "middle third", "highest third")


def load_model(run: str | None, stage: str | None, iteration: int | None) -> GalaxyVAE:
    """A finished run, or a stage's net with the parameters of its snapshot at `iteration`."""
    if run:
        return GalaxyVAE.load(run)
    files = kept_snapshots(stage)
    if iteration not in files:
        raise MochaError(f"{stage}: no kept snapshot at iteration {iteration}; "
                         f"kept: {sorted(files)}")
    return GalaxyVAE(load_snapshot(stage, files[iteration]))


def synthetic_split(data: str) -> builtin.SyntheticSplit:
    """The built-in synthetic split `data` names; ConfigError for any other data."""
    name = builtin.split_name(data)
    if name not in builtin.SYNTHETIC_SPLITS:
        raise ConfigError(f"--data {data}: only a built-in synthetic split has drawn scene "
                          f"properties; one of {', '.join(builtin.SYNTHETIC_SPLITS)}")
    return builtin.SYNTHETIC_SPLITS[name]


def scene_groups(data: str, n: int) -> Iterator[tuple[str, str, np.ndarray]]:
    """(property, group, mask over the split's images) for every group of every property."""
    split = synthetic_split(data)
    scenes = scene_parameters(n, seed=split.seed, population=split.population)
    for index, morphology in enumerate(MORPHOLOGIES):
        yield "morphology", morphology, scenes["morphology"] == index
    for key, label in (("psf_fwhm_in_r50", "PSF FWHM / r50"), ("signal_to_noise", "S/N")):
        values = scenes[key].reshape(n, -1)[:, 0]  # the reference band's
        edges = np.quantile(values, [1 / 3, 2 / 3])
        third = np.searchsorted(edges, values, side="right")
        for index, name_of_third in enumerate(THIRDS):
            chosen = third == index
            low, high = values[chosen].min(), values[chosen].max()
            yield label, f"{name_of_third} ({low:.3g}-{high:.3g})", chosen
    for key, label in (("neighbour_count", "neighbours in the field"),
                       ("star_count", "stars in the field")):
        yield label, "none", scenes[key] == 0
        yield label, "one or more", scenes[key] > 0


def group_rows(evaluation: Evaluation, groups: Iterator[tuple[str, str, np.ndarray]]
               ) -> list[dict]:
    rows = []
    for prop, group, chosen in groups:
        if not chosen.any():
            continue
        rows.append({
            "property": prop, "group": group, "n_images": int(chosen.sum()),
            "mse_win_fraction": float(np.mean(evaluation.mse_win[chosen])),
            "likelihood_win_fraction": float(np.mean(evaluation.likelihood_win[chosen])),
            "median_mse_model": float(np.median(evaluation.mse_model[chosen])),
            "median_mse_baseline": float(np.median(evaluation.mse_baseline[chosen])),
        })
    return rows


def markdown(record: dict) -> str:
    model = record["run"] or f"{record['stage']} at iteration {record['iteration']:,}"
    summary = record["summary"]
    lines = [
        f"# Where {model} loses to the Gaussian fit",
        "",
        f"{record['data']}, all {record['n']:,} images: MSE wins "
        f"{100 * summary['mse_win_fraction']:.1f}%, likelihood wins "
        f"{100 * summary['likelihood_win_fraction']:.1f}%. By the drawn properties of each "
        "image's scene (experiments/where_it_loses.py):",
        "",
        "| property | group | images | MSE wins | likelihood wins | median MSE, VAE | "
        "median MSE, Gaussian |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in record["rows"]:
        lines.append(f"| {row['property']} | {row['group']} | {row['n_images']} | "
                     f"{100 * row['mse_win_fraction']:.1f}% | "
                     f"{100 * row['likelihood_win_fraction']:.1f}% | "
                     f"{row['median_mse_model']:.5f} | {row['median_mse_baseline']:.5f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", help="a finished run directory")
    model.add_argument("--stage", help="a stage directory with kept snapshots (with --iteration)")
    parser.add_argument("--iteration", type=int, help="the --stage snapshot to evaluate")
    parser.add_argument("--data", default="builtin:gz-heldout")
    parser.add_argument("--out", default="results/galaxy_vae_gz/where_it_loses")
    parser.add_argument("--force", action="store_true", help="replace an existing result")
    args = parser.parse_args()
    if args.stage and args.iteration is None:
        parser.error("--stage needs --iteration")
    json_path = os.path.join(args.out, "where_it_loses.json")
    with exit_on_user_error("where_it_loses"):
        if os.path.exists(json_path) and not args.force:
            raise MochaError(f"{json_path} exists; pass --force to replace it")
        synthetic_split(args.data)
        dataset = builtin.load(args.data)
        groups = list(scene_groups(args.data, len(dataset)))
        evaluation = evaluate(load_model(args.run, args.stage, args.iteration), dataset,
                              elbo_samples=1, label=args.data)
        record = {
            "run": args.run, "stage": args.stage, "iteration": args.iteration,
            "data": args.data, "n": len(dataset),
            "summary": {key: evaluation.summary[key] for key in
                        ("mse_win_fraction", "likelihood_win_fraction")},
            "rows": group_rows(evaluation, iter(groups)),
        }
        table = markdown(record)
        write_text_atomically(json_path, json.dumps(record, indent=2))
        write_text_atomically(os.path.join(args.out, "where_it_loses.md"), table)
    print(table, end="")


if __name__ == "__main__":
    main()
