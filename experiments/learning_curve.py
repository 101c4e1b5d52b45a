"""Wins against the Gaussian fit as training goes on: evaluate a run's kept snapshots.

    python experiments/learning_curve.py --stage runs/galaxy_vae_gz/stage1-mean
        [--data builtin:gz-heldout] [--n 500] [--iterations 10000 30000 ...]
        [--extrapolate-to 3600000] [--out results/galaxy_vae_gz/learning_curve] [--force]

Each chosen snapshot (default: those at 1, 2, 3 and 5 x 10^k iterations, k >= 4, that the stage
kept) is loaded as the run's net with that snapshot's parameters and evaluated with
galaxy_model.evaluation on the first --n images of --data (no retraining; a running stage can be
evaluated). Each point is recorded at once as --out/points/ITERATION.json with what it was
measured under (data, n, a hash of the stage's net.yaml) and is never measured again: a long run
that is resumed in later sessions, whose older snapshots are gone, keeps its earlier points. A
point recorded under other settings is refused unless --force, which measures it again.
learning_curve.json, learning_curve.md and learning_curve.png (wins against log iterations, the
poster's 97.1% / 97.2% marked) are rebuilt from every recorded point: a view of the points,
nothing else. With three or more points the
wins of the last half decade of iterations (at least three points) are fitted as a straight
line in log10(iterations) and evaluated at --extrapolate-to: an
extrapolation, labelled as one (default 3.6M: the poster's K20X at 200 it/s for 5 hours).

A stage trained with a fixed decoder sd (the mean stage of galaxy_vae.yaml's recipe) is judged
on likelihood with that fixed sd; its MSE wins are the meaningful curve.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os

import numpy as np

from galaxy_model import builtin
from galaxy_model.dataset import GalaxyDataset
from galaxy_model.evaluation import evaluate
from galaxy_model.model import GalaxyVAE
from mochapy.atomic import write_atomically, write_text_atomically
from mochapy.cli_errors import exit_on_user_error
from mochapy.errors import MochaError
from mochapy.runs import kept_snapshots, load_snapshot

POSTER = {"mse_win_fraction": 0.971, "likelihood_win_fraction": 0.972}
POSTER_GPU_ITERATIONS = 3_600_000  # 200 it/s (the poster's K20X) for 5 hours
RECENT_SPAN = 10**0.5  # the extrapolation fits the points of the last half decade of iterations


def log_grid_iterations(available: list[int]) -> list[int]:
    """The available iterations at 1, 2, 3 and 5 x 10^k (k >= 4), ascending."""
    wanted = {m * 10**k for k in range(4, 8) for m in (1, 2, 3, 5)}
    return sorted(i for i in available if i in wanted)


def evaluate_snapshot(stage_dir: str, path: str, dataset: GalaxyDataset, label: str) -> dict:
    """The evaluate summary of the stage's net with one snapshot's parameters."""
    run = load_snapshot(stage_dir, path)
    summary = evaluate(GalaxyVAE(run), dataset, elbo_samples=1, label=label).summary
    return {"iteration": run.iteration,
            **{key: summary[key] for key in ("mse_win_fraction", "likelihood_win_fraction",
                                             "median_mse_model", "median_mse_baseline")}}


def extrapolate(points: list[dict], key: str, iterations: int) -> float | None:
    """A straight line in log10(iterations) through the latest points, evaluated at `iterations`
    (capped at 1); None with fewer than three points. The latest points are those of the last
    half decade of iterations (at least three): a curve that rose early and then levelled off
    is extended from where it is now, not from its early slope."""
    if len(points) < 3:
        return None
    ordered = sorted(points, key=lambda p: p["iteration"])
    recent = [p for p in ordered if p["iteration"] >= ordered[-1]["iteration"] / RECENT_SPAN]
    points = recent if len(recent) >= 3 else ordered[-3:]
    x = np.log10([p["iteration"] for p in points])
    slope, intercept = np.polyfit(x, [p[key] for p in points], 1)
    return float(min(1.0, slope * math.log10(iterations) + intercept))


def markdown(record: dict) -> str:
    lines = [
        f"# Learning curve of {record['stage']} on {record['data']} (first {record['n']} images)",
        "",
        "| iterations | MSE wins | likelihood wins | median MSE, VAE | median MSE, Gaussian |",
        "|---:|---:|---:|---:|---:|",
    ]
    for p in record["points"]:
        lines.append(f"| {p['iteration']:,} | {100 * p['mse_win_fraction']:.1f}% | "
                     f"{100 * p['likelihood_win_fraction']:.1f}% | {p['median_mse_model']:.3g} | "
                     f"{p['median_mse_baseline']:.3g} |")
    extrapolated = record["extrapolation"]
    if extrapolated["mse_win_fraction"] is not None:
        lines += ["", f"Extrapolation (a straight line in log iterations through the points of the "
                  f"last half decade, at least three; not a measurement) to "
                  f"{extrapolated['iterations']:,} iterations: MSE wins "
                  f"{100 * extrapolated['mse_win_fraction']:.1f}%, likelihood wins "
                  f"{100 * extrapolated['likelihood_win_fraction']:.1f}% (poster: 97.1% / 97.2%)."]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    iterations = [p["iteration"] for p in record["points"]]
    for key, label, colour in (("mse_win_fraction", "MSE wins", "C0"),
                               ("likelihood_win_fraction", "likelihood wins", "C1")):
        axes.plot(iterations, [100 * p[key] for p in record["points"]], "o-", color=colour,
                  label=label)
        axes.axhline(100 * POSTER[key], color=colour, linestyle=":", linewidth=1)
        extrapolated = record["extrapolation"][key]
        if extrapolated is not None:
            axes.plot([iterations[-1], record["extrapolation"]["iterations"]],
                      [100 * record["points"][-1][key], 100 * extrapolated], "--", color=colour,
                      label=f"{label}, extrapolated")
    axes.set_xscale("log")
    axes.set_xlabel("training iterations")
    axes.set_ylabel("wins against the Gaussian fit (%)")
    axes.set_title(f"{os.path.basename(record['stage'])} on {record['data']}", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")


def measured_under(stage_dir: str, data: str, n: int) -> dict:
    """What a point depends on besides its snapshot: the images and the stage's net."""
    with open(os.path.join(stage_dir, "net.yaml"), "rb") as handle:
        net = hashlib.sha256(handle.read()).hexdigest()
    return {"data": data, "n": n, "net_sha256": net}


def recorded_points(folder: str) -> dict[int, dict]:
    """Iteration -> recorded point, from --out/points/."""
    points = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json") and not name.startswith("."):
                path = os.path.join(folder, name)
                try:
                    with open(path, encoding="utf-8") as handle:
                        point = json.load(handle)
                except (OSError, ValueError) as exc:
                    raise MochaError(f"{path}: cannot read the recorded point: {exc}") from None
                points[point["iteration"]] = point
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, help="a run (or stage) directory")
    parser.add_argument("--data", default="builtin:gz-heldout")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--iterations", type=int, nargs="*")
    parser.add_argument("--extrapolate-to", type=int, default=POSTER_GPU_ITERATIONS)
    parser.add_argument("--out", default="results/galaxy_vae_gz/learning_curve")
    parser.add_argument("--force", action="store_true",
                        help="measure the chosen points again, replacing their records")
    args = parser.parse_args()
    with exit_on_user_error("learning_curve"):
        files = kept_snapshots(args.stage)
        chosen = args.iterations or log_grid_iterations(list(files))
        missing = [i for i in chosen if i not in files]
        if missing or not chosen:
            raise MochaError(f"{args.stage}: no kept snapshot at iteration(s) "
                             f"{missing or 'of the log grid'}; kept: {sorted(files)}")
        folder = os.path.join(args.out, "points")
        points = recorded_points(folder)
        dataset = builtin.load(args.data)
        dataset = dataset.subset(np.arange(min(args.n, len(dataset))))
        settings = measured_under(args.stage, args.data, len(dataset))
        for iteration, point in points.items():  # all checked before anything is measured
            if point.get("settings") != settings and not (args.force and iteration in chosen):
                raise MochaError(f"{os.path.join(folder, f'{iteration:09d}.json')} was measured "
                                 f"under {point.get('settings')}, not {settings}; move it away "
                                 "or pass --force to measure it again")
        for iteration in chosen:
            if iteration in points and not args.force:
                continue
            point = {**evaluate_snapshot(args.stage, files[iteration], dataset, args.data),
                     "settings": settings}
            write_text_atomically(os.path.join(folder, f"{iteration:09d}.json"),
                                  json.dumps(point, indent=2))
            points[iteration] = point
        ordered = [points[i] for i in sorted(points)]
        record = {
            "stage": args.stage, "data": args.data, "n": len(dataset), "points": ordered,
            "extrapolation": {
                "iterations": args.extrapolate_to,
                **{key: extrapolate(ordered, key, args.extrapolate_to) for key in POSTER},
            },
        }
        table = markdown(record)
        write_text_atomically(os.path.join(args.out, "learning_curve.json"),
                              json.dumps(record, indent=2))
        write_text_atomically(os.path.join(args.out, "learning_curve.md"), table)
        write_atomically(os.path.join(args.out, "learning_curve.png"),
                         lambda temp: plot(record, temp))
    print(table, end="")


if __name__ == "__main__":
    main()
