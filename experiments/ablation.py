"""Ablation of the training recipe: train variants of one YAML net, evaluate each as the poster.

    python experiments/ablation.py experiments/ablation.yaml --out runs/ablation [--jobs 2]

The plan file names a base net and variants, each a set of `layer.field: value` (or
`solver.field`, `coffee_breaks.x.field`) overrides, optionally `add_layers` appended to the base
net and `stages`. Every variant trains into OUT/<name>/ with the same seed and budget, is evaluated
on the splits listed, and lands as one row of OUT/ablation.md and OUT/ablation.json. Variants run
in parallel processes (one BLAS thread each) with --jobs; a variant whose row is already in OUT is
kept as it is (--rerun trains what is missing and evaluates every variant again).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))



def run_variant(plan_path: str, index: int, out_dir: str) -> dict:
    """Train and evaluate one variant (runs in its own process)."""
    from galaxy_model.builtin import load
    from galaxy_model.evaluation import evaluate
    from galaxy_model.model import GalaxyVAE
    from mochapy.config import apply_overrides, parse_config
    from mochapy.run_directory import is_run
    from mochapy.training import train

    with open(plan_path, encoding="utf-8") as handle:
        plan = yaml.safe_load(handle)
    base_path = os.path.join(os.path.dirname(os.path.abspath(plan_path)), plan["base"])
    with open(base_path, encoding="utf-8") as handle:
        base = yaml.safe_load(handle)
    variant = plan["variants"][index]
    base["layers"] = [*base["layers"], *variant.get("add_layers", [])]
    net = apply_overrides(base, {**plan.get("common", {}), **variant.get("set", {})}, plan_path)
    net["name"] = variant["name"]
    net["report"] = []
    if "stages" in variant:
        net["stages"] = variant["stages"]
    run_dir = os.path.join(out_dir, variant["name"])
    os.makedirs(run_dir, exist_ok=True)
    text = yaml.safe_dump(net, sort_keys=False)
    config = parse_config(net, base_path, text)
    train(config, run_dir, backend="cpu", progress=False, resume=is_run(run_dir),
          echo=lambda line: None)
    model = GalaxyVAE.load(run_dir)
    with open(os.path.join(run_dir, "training.json"), encoding="utf-8") as handle:
        trained = json.load(handle)  # of the run that trained it (a resumed run skips training)
    row = {"name": variant["name"], "description": variant.get("description", ""),
           "overrides": variant.get("set", {}),
           "wall_seconds": round(trained["wall_seconds_total"], 1)}
    for split in plan.get("evaluate", ["builtin:heldout"]):
        row[split] = evaluate(model, load(split), label=split).summary
    with open(os.path.join(run_dir, "ablation_row.json"), "w", encoding="utf-8") as handle:
        json.dump(row, handle, indent=2)
    return row


def markdown(rows: list[dict], splits: list[str]) -> str:
    head = "| variant | " + " | ".join(
        f"{s} MSE wins | {s} likelihood wins | {s} ELBO" for s in splits) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(splits))]
    for row in rows:
        cells = [f"{row['name']}: {row['description']}"]
        for split in splits:
            s = row[split]
            cells += [f"{100 * s['mse_win_fraction']:.1f}%",
                      f"{100 * s['likelihood_win_fraction']:.1f}%",
                      f"{s['elbo_nats_per_image']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan")
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--only", type=int, default=None, help="run one variant (by index)")
    parser.add_argument("--rerun", action="store_true",
                        help="evaluate variants again even where OUT holds their row")
    args = parser.parse_args()
    if args.only is not None:
        print(json.dumps(run_variant(args.plan, args.only, args.out)))
        return
    with open(args.plan, encoding="utf-8") as handle:
        plan = yaml.safe_load(handle)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    pending = [
        index for index, variant in enumerate(plan["variants"])
        if args.rerun or not os.path.exists(
            os.path.join(args.out, variant["name"], "ablation_row.json"))
    ]
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            index = pending.pop(0)
            running.append(subprocess.Popen(
                [sys.executable, __file__, args.plan, "--out", args.out, "--only", str(index)],
                env=env,
            ))
        time.sleep(2)
        running = [p for p in running if p.poll() is None]
    rows = []
    for variant in plan["variants"]:
        path = os.path.join(args.out, variant["name"], "ablation_row.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                rows.append(json.load(handle))
    splits = plan.get("evaluate", ["builtin:heldout"])
    with open(os.path.join(args.out, "ablation.json"), "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=2)
    with open(os.path.join(args.out, "ablation.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(rows, splits))
    print(markdown(rows, splits))


if __name__ == "__main__":
    main()
