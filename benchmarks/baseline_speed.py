"""How fast the per-image baselines fit: the poster's Gaussian and the PSF-convolved Sérsic, each
batched over images, on held-out galaxies (target: 1000 Sérsic fits in under a minute on 2 cores).

    python benchmarks/baseline_speed.py [--data builtin:heldout] [--n 1000] [--json OUT.json]

Prints a Markdown table: seconds, images per second, the fraction converged and the median MSE.
The load average is printed too: on a shared machine the times say as much about the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from galaxy_model.baseline import fit_gaussian2d
from galaxy_model.builtin import load
from galaxy_model.evaluation import SERSIC_PSF_SIGMA
from galaxy_model.sersic import fit_sersic
from mochapy.atomic import write_text_atomically
from mochapy.outputs import claim_output


def measure(data: str, count: int) -> list[dict]:
    images = load(data).data[:count]
    fitters = {
        "gaussian": lambda: fit_gaussian2d(images),
        "sersic": lambda: fit_sersic(images, psf_sigma=SERSIC_PSF_SIGMA),
    }
    rows = []
    for name, fit in fitters.items():
        started = time.perf_counter()
        result = fit()
        seconds = time.perf_counter() - started
        rows.append({"baseline": name, "images": len(images), "bands": images.shape[1],
                     "seconds": seconds, "images_per_second": len(images) / seconds,
                     "converged": float(np.mean(result.converged)),
                     "median_mse": float(np.median(result.mse))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin:heldout")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    parser.add_argument("--force", action="store_true", help="replace the --json file")
    args = parser.parse_args()
    if args.json:
        claim_output(args.json, [], args.force)
    rows = measure(args.data, args.n)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| baseline | images | bands | seconds | images/s | converged | median MSE |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['baseline']} | {row['images']} | {row['bands']} | {row['seconds']:.1f} | "
              f"{row['images_per_second']:.1f} | {100 * row['converged']:.1f}% | "
              f"{row['median_mse']:.4g} |")
    if args.json:
        write_text_atomically(args.json, json.dumps(
            {"data": args.data, "load_average": os.getloadavg()[0], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
