"""Which property of the data sets the win rate: the poster's net on populations that each
drop, halve or double one factor.

    python experiments/sensitivity.py [--plan experiments/sensitivity.yaml]
        [--work runs/sensitivity] [--out results/sensitivity] [--only NAME ...] [--force]
        [--refresh-noise]

For every variant of the plan (experiments/sensitivity.yaml): its population is the plan's base
population with the variant's changes (galaxy_model.populations.vary); its train, valid and
heldout images are synthesised into --work/NAME/ (the same sizes and seeds for every variant);
the recipe's net and stages are trained on them into --work/NAME/run with the plan's settings
(the same budget for every variant; a finished run is reused, an unfinished one resumed); the
result is evaluated on the variant's held-out images and recorded at once as
--out/variants/NAME.json, with the settings it was made under. A recorded variant is never
trained again: a study can be stopped and continued in any later session, on any machine, from
the recorded rows alone (the work folder is scratch). A row made under other settings (budget,
data, population) is refused unless --force, which records that variant again and replaces it.

After each variant the table (sensitivity.json, sensitivity.md) and the plot (sensitivity.png)
are rebuilt from every recorded row of the plan: they are a view of the rows, nothing else, and
say how many of the plan's variants are still to run. Per variant and factor they hold the MSE
and likelihood wins against the Gaussian fit and each model's excess MSE over the noise: the
median over images of (MSE - the image's own noise variance, the mean of 1/ivar over its pixels).
A row keeps every held-out image's MSE (both models) and noise variance with the noise model
(the generator's ivar version) that gave it. Excess columns are shown only for rows whose noise
model is the generator's current one: --refresh-noise recomputes the noise variances of such
rows from their regenerated held-out images (the pixels do not depend on the noise model), with
no training. Rows recorded before per-image MSEs were kept show no excess until trained again.
Variants run in the order --only names them (plan order without it); the table keeps plan order.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

import numpy as np
import yaml

from galaxy_model.dataset import GalaxyDataset, read_dataset, write_dataset
from galaxy_model.evaluation import evaluate
from galaxy_model.model import GalaxyVAE
from galaxy_model.populations import POPULATIONS, Population, vary
from galaxy_model.synth import IVAR_VERSION, synthesize
from mochapy.atomic import write_atomically, write_text_atomically
from mochapy.cli_errors import exit_on_user_error
from mochapy.config import load_config
from mochapy.errors import ConfigError, MochaError
from mochapy.training import stage_finished, train

SPLITS = ("train", "valid", "heldout")


@dataclass(frozen=True)
class Variant:
    name: str
    factor: str
    population: Population


@dataclass(frozen=True)
class Plan:
    path: str
    recipe: str
    data: dict[str, tuple[int, int]]  # split -> (n, seed)
    stages: dict[str, dict]
    variants: list[Variant]


def load_plan(path: str) -> Plan:
    """Read and check a plan; ConfigError naming the file and field on anything wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the plan: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the plan must be a mapping")
    missing = [key for key in ("recipe", "base_population", "data", "stages", "variants")
               if key not in raw]
    if missing:
        raise ConfigError(f"{path}: missing field {missing[0]!r}")
    base = POPULATIONS.get(raw["base_population"])
    if base is None:
        raise ConfigError(f"{path}: base_population {raw['base_population']!r} is not one of "
                          f"{', '.join(POPULATIONS)}")
    data = {}
    for split in SPLITS:
        entry = (raw["data"] or {}).get(split)
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), int) and entry[k] > 0
                                                  for k in ("n", "seed")):
            raise ConfigError(f"{path}: data.{split} needs positive integers n and seed")
        data[split] = (entry["n"], entry["seed"])
    variants, names = [], set()
    for index, entry in enumerate(raw["variants"] or []):
        where = f"{path}: variants[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: expected a mapping with a name, factor and changes")
        if entry["name"] in names:
            raise ConfigError(f"{where}: variant name {entry['name']!r} is used twice")
        names.add(entry["name"])
        try:
            population = vary(base, f"{base.version}/{entry['name']}", entry.get("changes") or {})
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        variants.append(Variant(entry["name"], str(entry.get("factor", "")), population))
    if not variants:
        raise ConfigError(f"{path}: 'variants' lists no variant")
    recipe = os.path.join(os.path.dirname(os.path.abspath(path)), raw["recipe"])
    return Plan(path, recipe, data, raw["stages"] or {}, variants)


def variant_data(plan: Plan, variant: Variant, folder: str,
                 splits: tuple[str, ...] = SPLITS) -> dict[str, str]:
    """The variant's split files (absolute paths: the net file names them from its own folder),
    synthesised once; a file of another population is refused. A file of this population made
    under an older noise model is this script's scratch with the same pixels: it is made again."""
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for split in splits:
        n, seed = plan.data[split]
        path = paths[split] = os.path.join(folder, f"{split}-n{n}-seed{seed}.h5")
        if os.path.exists(path):
            attrs = read_dataset(path, limit=1).attrs
            if attrs.get("population") != json.dumps(variant.population.describe(),
                                                      sort_keys=True):
                raise MochaError(f"{path} holds another population's images; move it away")
            if noise_model(attrs) == current_noise_model():
                continue
        write_dataset(path, synthesize(n, seed=seed, population=variant.population))
    return paths


def variant_net(plan: Plan, variant: Variant, paths: dict[str, str], path: str) -> str:
    """Write the variant's net file: the recipe with the plan's stage settings, no report."""
    with open(plan.recipe, encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    if not isinstance(recipe, dict) or not isinstance(recipe.get("stages"), list):
        raise ConfigError(f"{plan.recipe}: the recipe must list its stages")
    unknown = set(plan.stages) - {stage.get("name") for stage in recipe["stages"]}
    if unknown:
        raise ConfigError(f"{plan.path}: stages: the recipe has no stage {sorted(unknown)[0]!r}")
    if "extends" in recipe:
        recipe["extends"] = os.path.join(os.path.dirname(plan.recipe), recipe["extends"])
    recipe["name"] = f"sensitivity-{variant.name}"
    recipe["report"] = []
    for stage in recipe["stages"]:
        settings = {key: value.format(**paths) if isinstance(value, str) else value
                    for key, value in (plan.stages.get(stage["name"]) or {}).items()}
        stage["set"] = {**(stage.get("set") or {}), **settings}
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(recipe, handle, sort_keys=False)
    return path


def current_noise_model() -> str:
    """The generator's noise model: the version of its ivar maps."""
    return IVAR_VERSION


def noise_model(attrs: dict) -> str:
    """The noise model a dataset was made under; "ivar-v1" before datasets recorded it."""
    return str(attrs.get("ivar_version", "ivar-v1"))


def noise_variance(dataset: GalaxyDataset) -> np.ndarray:
    """Each image's own noise variance: the mean of 1/ivar over its unmasked pixels."""
    ivar = dataset.ivar.reshape(len(dataset), -1)
    return np.array([np.mean(1 / row[row > 0]) for row in ivar])


def per_image(values: np.ndarray) -> list[float]:
    """Five significant digits: enough for medians of differences, a few kB per row."""
    return [float(f"{value:.5g}") for value in values]


def noise_is_current(row: dict) -> bool:
    """Whether a row's noise variances come from the generator's current noise model."""
    return row.get("noise_model") == current_noise_model()


def row_path(out: str, variant: Variant) -> str:
    """Where a variant's row is recorded."""
    return os.path.join(out, "variants", f"{variant.name}.json")


def excess_over_noise(row: dict, key: str) -> float | None:
    """Median over images of MSE minus the image's own noise variance; None when the row has
    no per-image MSEs or its noise variances come from another noise model."""
    if key not in row or not noise_is_current(row):
        return None
    return float(np.median(np.asarray(row[key]) - np.asarray(row["noise_variance_per_image"])))


def settings(plan: Plan, variant: Variant) -> dict:
    """What a variant's row depends on: its population, the data sizes and seeds, the budget."""
    return {"population": variant.population.describe(),
            "data": {split: list(entry) for split, entry in plan.data.items()},
            "stages": plan.stages}


def recorded_row(plan: Plan, variant: Variant, out: str, force: bool) -> dict | None:
    """The variant's recorded row, if one was made under the plan's settings; None to (re)run."""
    path = row_path(out, variant)
    if not os.path.exists(path) or force:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            row = json.load(handle)
    except (OSError, ValueError) as exc:
        raise MochaError(f"{path}: cannot read the recorded row: {exc}") from None
    if row.get("settings") != json.loads(json.dumps(settings(plan, variant))):
        raise MochaError(f"{path} was made under other settings than {plan.path}'s; "
                         "move it away or pass --force to train this variant again")
    return row


def write_json(path: str, content: dict) -> None:
    write_text_atomically(path, json.dumps(content, indent=2))


def run_variant(plan: Plan, variant: Variant, work: str, progress: bool) -> dict:
    """Train (or reuse the work folder's run) and evaluate one variant; its row of the table."""
    folder = os.path.join(work, variant.name)
    paths = variant_data(plan, variant, folder)
    net = variant_net(plan, variant, paths, os.path.join(folder, "net.yaml"))
    run_dir = os.path.join(folder, "run")
    if not stage_finished(run_dir):
        train(load_config(net), run_dir, resume=os.path.isdir(run_dir), progress=progress)
    heldout = read_dataset(paths["heldout"])
    result = evaluate(GalaxyVAE.load(run_dir), heldout, elbo_samples=1,
                      label=f"{variant.name} heldout")
    with open(os.path.join(run_dir, "training.json"), encoding="utf-8") as handle:
        iterations = json.load(handle)["iterations"]
    return {
        "variant": variant.name, "factor": variant.factor,
        "settings": settings(plan, variant), "iterations": iterations,
        "mse_win_fraction": result.summary["mse_win_fraction"],
        "likelihood_win_fraction": result.summary["likelihood_win_fraction"],
        "median_mse_model": result.summary["median_mse_model"],
        "median_mse_baseline": result.summary["median_mse_baseline"],
        "noise_model": noise_model(heldout.attrs),
        "mse_model_per_image": per_image(result.mse_model),
        "mse_baseline_per_image": per_image(result.mse_baseline),
        "noise_variance_per_image": per_image(noise_variance(heldout)),
    }


def refresh_noise(plan: Plan, variant: Variant, row: dict, work: str) -> dict:
    """The row with its noise variances recomputed under the current noise model."""
    paths = variant_data(plan, variant, os.path.join(work, variant.name), ("heldout",))
    heldout = read_dataset(paths["heldout"])
    return {**row, "noise_model": noise_model(heldout.attrs),
            "noise_variance_per_image": per_image(noise_variance(heldout))}


def markdown(rows: list[dict], plan: Plan) -> str:
    recorded = {row["variant"] for row in rows}
    missing = [v.name for v in plan.variants if v.name not in recorded]
    budget = plan.stages.get("mean", {}).get("solver.max_iter")
    budget = f"{budget:,}" if isinstance(budget, int) else "the recipe's"
    lines = [
        "# Sensitivity of the win rate to the data",
        "",
        f"Plan {os.path.relpath(plan.path)}; every variant trained by "
        f"{os.path.relpath(plan.recipe)} with the same settings (mean stage: "
        f"{budget} iterations on "
        f"{plan.data['train'][0]:,} images) and evaluated on its own "
        f"{plan.data['heldout'][0]:,} held-out images. Excess MSE: median over images of the MSE "
        f"minus the image's own noise variance (noise model {current_noise_model()}); \u2014 where "
        "a row was recorded before per-image MSEs were kept or under another noise model.",
        "",
        f"{len(rows)} of the plan's {len(plan.variants)} variants recorded"
        + (f"; still to run: {', '.join(missing)}." if missing else "."),
        "",
        "| factor | variant | iterations | MSE wins | likelihood wins | Gaussian excess MSE | "
        "VAE excess MSE |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        excess = [excess_over_noise(row, key)
                  for key in ("mse_baseline_per_image", "mse_model_per_image")]
        lines.append(
            f"| {row['factor']} | {row['variant']} | {row['iterations']:,} | "
            f"{100 * row['mse_win_fraction']:.1f}% | {100 * row['likelihood_win_fraction']:.1f}% | "
            + " | ".join("\u2014" if value is None else f"{value:.3g}" for value in excess) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 6), dpi=120)
    FigureCanvasAgg(figure)
    wins, excess = figure.add_subplot(2, 1, 1), figure.add_subplot(2, 1, 2, sharex=None)
    positions = np.arange(len(rows))
    labels = [f"{row['variant']}" for row in rows]
    # Points, not bars: the rates sit between 55% and 95%, and bars from zero would hide
    # the few points that separate the variants.
    for marker, key, label in (("o", "mse_win_fraction", "MSE wins"),
                               ("s", "likelihood_win_fraction", "likelihood wins")):
        wins.plot(positions, [100 * row[key] for row in rows], marker, label=label)
    wins.axhline(97.1, color="grey", linestyle=":", linewidth=1, label="poster (97.1 / 97.2%)")
    wins.set_ylabel("wins vs Gaussian (%)")
    wins.grid(axis="y", linewidth=0.3)
    wins.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    for offset, key, label in ((-0.2, "mse_baseline_per_image", "Gaussian"),
                               (0.2, "mse_model_per_image", "VAE")):
        values = [excess_over_noise(row, key) for row in rows]
        excess.bar(positions + offset, [np.nan if v is None else v for v in values], width=0.4,
                   label=label)
    excess.set_ylabel("excess MSE over the noise")
    excess.legend(fontsize=7)
    for axes in (wins, excess):
        axes.set_xticks(positions)
        axes.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")


def drop_training_images(plan: Plan, variant: Variant, work: str) -> None:
    """Delete a recorded variant's training images (1.9 GB at the shipped plan's size), so a
    whole study needs the disk of one variant; the seed makes them again if ever needed."""
    n, seed = plan.data["train"]
    path = os.path.join(work, variant.name, f"train-n{n}-seed{seed}.h5")
    if os.path.exists(path):
        os.remove(path)


def write_table(rows: list[dict], plan: Plan, out: str) -> str:
    """Rebuild the table and plot from the recorded rows (plan order); the Markdown table."""
    order = {v.name: index for index, v in enumerate(plan.variants)}
    rows = sorted(rows, key=lambda row: order[row["variant"]])
    table = markdown(rows, plan)
    write_json(os.path.join(out, "sensitivity.json"),
               {"plan": os.path.relpath(plan.path), "variants_in_plan": len(plan.variants),
                "rows": rows})
    write_text_atomically(os.path.join(out, "sensitivity.md"), table)
    write_atomically(os.path.join(out, "sensitivity.png"), lambda temp: plot(rows, temp))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="experiments/sensitivity.yaml")
    parser.add_argument("--work", default="runs/sensitivity")
    parser.add_argument("--out", default="results/sensitivity")
    parser.add_argument("--only", nargs="*", help="run only these variants, in this order")
    parser.add_argument("--force", action="store_true",
                        help="record the chosen variants again, replacing their rows "
                        "(a finished run of theirs in --work is reused)")
    parser.add_argument("--refresh-noise", action="store_true",
                        help="recompute the noise variances of rows made under an older noise "
                        "model (no training)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    with exit_on_user_error("sensitivity"):
        plan = load_plan(args.plan)
        by_name = {v.name: v for v in plan.variants}
        unknown = [name for name in args.only or () if name not in by_name]
        if unknown:
            raise ConfigError(f"{args.plan}: no variant named {unknown[0]!r}")
        chosen = [by_name[name] for name in args.only] if args.only else plan.variants
        rows = {}
        for variant in plan.variants:  # every recorded row is checked before anything runs
            row = recorded_row(plan, variant, args.out, args.force and variant in chosen)
            if row is not None:
                rows[variant.name] = row
        table = None
        if args.refresh_noise:  # noise variances only: nothing is trained
            for variant in chosen:
                row = rows.get(variant.name)
                if row and "mse_model_per_image" in row and not noise_is_current(row):
                    rows[variant.name] = refresh_noise(plan, variant, row, args.work)
                    write_json(row_path(args.out, variant), rows[variant.name])
        for variant in [] if args.refresh_noise else chosen:
            if variant.name in rows:
                continue
            rows[variant.name] = run_variant(plan, variant, args.work, not args.quiet)
            write_json(row_path(args.out, variant), rows[variant.name])
            drop_training_images(plan, variant, args.work)
            table = write_table(list(rows.values()), plan, args.out)
        if table is None:
            table = write_table(list(rows.values()), plan, args.out)
    print(table, end="")


if __name__ == "__main__":
    main()
