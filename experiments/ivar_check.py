"""Does ivar give the variance of the synthetic pixels? Measured by photographing each scene again.

    python experiments/ivar_check.py [--n 200] [--seed 13] [--draws 128]
                                     [--out results/ivar_check] [--force]

Each of the first --n gz-v1 scenes of --seed (13: those of builtin:gz-heldout) is rendered once
at zoom 1 (the fifth that the generator renders again through a wider field are cut here at the
largest stamp that fits), cut out where the generator's own noise draw puts it, and photographed
--draws more times with fresh noise through the same stamp. Per image, the ratio of the measured
variance over the draws to the predicted one, pooled over its unmasked pixels (and over its border
pixels, the sky): for the current ivar (IVAR_VERSION) and, recomputed here for comparison, for
ivar-v1's linearised stretch that ignored the clip at black. Writes ivar_check.json and
ivar_check.md into --out (--force replaces them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from galaxy_model import stamps, synth
from galaxy_model.populations import GZ_V1
from galaxy_model.synth import photograph
from galaxy_model.synth.generate import _fitting_zoom
from mochapy.cli_errors import exit_on_user_error
from mochapy.outputs import atomic_directory

PERCENTILES = (5, 50, 95)


def linearised_variance(exposure: photograph.Exposure) -> np.ndarray:
    """ivar-v1's display variance: the stretch to first order, no clip, plus the 8-bit rounding."""
    e = exposure
    slope_squared = 1 / ((e.softening**2 + e.signal**2) * e.stretch**2)
    return e.variance * slope_squared + 1 / (12 * photograph.DISPLAY_LEVELS**2)


def measure(n: int, seed: int, draws: int) -> dict:
    """Per-image ratios measured / predicted variance (all unmasked pixels and the border)."""
    central, field, observation = synth.draw_scenes(seed, 0, 1, GZ_V1, n)
    exposure = photograph.expose(central, field, observation, np.ones(n), 1)
    variance = photograph.display_variance(exposure)
    display, saturated = photograph.develop(exposure, observation.noise)
    centres, r50 = stamps.measure(display.sum(axis=1))
    r50 = r50 * np.minimum(_fitting_zoom(centres, r50), 1)
    _, ivar, mask, scale, _ = photograph.to_stamp(display, variance, saturated, centres, r50,
                                                  stamps.STAMP_SIZE)
    keep = mask == 0
    predicted = {
        synth.IVAR_VERSION: np.divide(np.broadcast_to(scale[:, None, None, None] ** 2, ivar.shape),
                                      ivar, out=np.zeros(ivar.shape), where=keep),
        "ivar-v1": stamps.cutout_variance(linearised_variance(exposure), centres, r50),
    }
    reference = stamps.cutout(display, centres, r50).astype(np.float64)
    total, squares = np.zeros_like(reference), np.zeros_like(reference)
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        shot, _ = photograph.develop(exposure, rng.standard_normal(display.shape, np.float32))
        deviation = stamps.cutout(shot, centres, r50) - reference
        total += deviation
        squares += deviation**2
    measured = (squares - total**2 / draws) / (draws - 1)

    ratios = {}
    for version, values in predicted.items():
        for region, pick in (("all", lambda a: a.reshape(n, -1)),
                             ("sky", lambda a: stamps.border_pixels(a[:, 0]))):
            ours, theirs, where = pick(measured), pick(values), pick(keep)
            ratios[f"{version} {region}"] = [ours[i][where[i]].sum() / theirs[i][where[i]].sum()
                                             for i in range(n)]
    return {
        "n": n, "seed": seed, "draws": draws, "population": GZ_V1.version,
        "ivar_version": synth.IVAR_VERSION, "generator_version": synth.generator_version(GZ_V1),
        "summary": {name: dict(zip([f"p{p}" for p in PERCENTILES],
                                   [float(f"{v:.4g}") for v in np.percentile(r, PERCENTILES)],
                                   strict=True)) | {"min": float(f"{min(r):.4g}"),
                                                    "max": float(f"{max(r):.4g}")}
                    for name, r in ratios.items()},
        "canvas_black_fraction": [float(f"{v:.3g}") for v in (display == 0).mean(axis=(1, 2, 3))],
        "softening_in_sigma": [float(f"{v:.4g}") for v in observation.softening_in_sigma],
        "ratios": {name: [float(f"{v:.5g}") for v in r] for name, r in ratios.items()},
    }


def markdown(record: dict) -> str:
    lines = [
        f"# ivar against the measured variance ({record['population']}, {record['n']} images, "
        f"{record['draws']} noise draws each)",
        "",
        "Per image: measured variance over the draws / predicted (1/ivar in display units), "
        "pooled over its unmasked stamp pixels (all) or its border pixels (sky).",
        "",
        "| ivar | pixels | 5th pct | median | 95th pct | min | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in record["summary"].items():
        version, region = name.split()
        lines.append(f"| {version} | {region} | {row['p5']:.3f} | {row['p50']:.3f} | "
                     f"{row['p95']:.3f} | {row['min']:.3f} | {row['max']:.3f} |")
    black = np.array(record["canvas_black_fraction"])
    lines += ["", f"Canvas pixels displayed black (clipped) in the generator's own draw: median "
              f"{np.median(black):.1%}, 95th percentile {np.percentile(black, 95):.1%}, max "
              f"{black.max():.1%}. ivar-v1 (linearised stretch, no clip) is recomputed here for "
              f"comparison; the data sets carry {record['ivar_version']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--draws", type=int, default=128)
    parser.add_argument("--out", default="results/ivar_check")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.n <= synth.CHUNK_SIZE or args.draws < 2:
        sys.exit(f"ivar_check: --n must be 1-{synth.CHUNK_SIZE} and --draws at least 2")
    with exit_on_user_error("ivar_check"):
        with atomic_directory(args.out, force=args.force) as staging:
            record = measure(args.n, args.seed, args.draws)
            table = markdown(record)
            with open(os.path.join(staging, "ivar_check.json"), "w", encoding="utf-8") as handle:
                json.dump(record, handle, indent=2)
            with open(os.path.join(staging, "ivar_check.md"), "w", encoding="utf-8") as handle:
                handle.write(table)
    print(table, end="")


if __name__ == "__main__":
    main()
