"""What the sd's contrast head did: one run's sd maps against those of the run it started from.

    python experiments/sd_contrast.py --before results/galaxy_vae_z32_wide
                                      --after results/galaxy_vae_z32_contrast
                                      [--data builtin:heldout] [--out results/sd_contrast]

Both runs must share f_mu (the contrast experiment trains only its head). For every image the
head's effective contrast 1 + a is the least-squares slope of log(f_sigma_after - floor) on
log(f_sigma_before - floor), the floor being the sd heads' 0.001 (exact where the exponent is
below its cap). Written to --out: sd_contrast.json (per quartile of the Gaussian fit's MSE: the
median contrast and the likelihood wins before and after) and sd_contrast.png (the contrasts'
histograms by quartile, and galaxies lost before and won after: x, its residual, both sd maps).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from mochapy.cli_errors import exit_on_user_error
from mochapy.outputs import atomic_directory

SD_FLOOR = 0.001  # f_sigma = SD_FLOOR + exp(.) in every shipped run
EXAMPLES = 4


def effective_contrast(before_sd: np.ndarray, after_sd: np.ndarray) -> np.ndarray:
    """Per image, the slope of log(after - floor) on log(before - floor) over its pixels."""
    u = np.log(np.asarray(before_sd, np.float64) - SD_FLOOR).reshape(len(before_sd), -1)
    v = np.log(np.asarray(after_sd, np.float64) - SD_FLOOR).reshape(len(after_sd), -1)
    u = u - u.mean(axis=1, keepdims=True)
    v = v - v.mean(axis=1, keepdims=True)
    return (u * v).sum(axis=1) / (u * u).sum(axis=1)


def analyse(before_dir: str, after_dir: str, data: str, out: str) -> dict:
    from galaxy_model import metrics
    from galaxy_model.baseline import fit_gaussian2d
    from galaxy_model.builtin import load
    from galaxy_model.evaluation import baseline_misfit_groups
    from galaxy_model.model import GalaxyVAE

    before, after = GalaxyVAE.load(before_dir), GalaxyVAE.load(after_dir)
    x = before.check_images(load(data).data, data)
    old, new = before.reconstruct(x), after.reconstruct(x)
    if not np.allclose(old.mean, new.mean, rtol=1e-5, atol=1e-6):
        raise SystemExit(f"error: {before_dir} and {after_dir} differ in f_mu: not a head-only run")
    x64 = x.astype(np.float64)
    baseline = fit_gaussian2d(x).model.reshape(x.shape)
    won_before = metrics.likelihood_win(x64, old.mean, old.sd, baseline)
    won_after = metrics.likelihood_win(x64, new.mean, new.sd, baseline)
    contrast = effective_contrast(old.sd, new.sd)
    quartiles = baseline_misfit_groups(metrics.per_image_mse(x64, baseline))
    summary = {
        "before": before_dir, "after": after_dir, "data": data, "n_images": len(x),
        "likelihood_wins_before": float(won_before.mean()),
        "likelihood_wins_after": float(won_after.mean()),
        "by_baseline_misfit_quartile": [
            {"quartile": q + 1, "median_contrast": float(np.median(contrast[part])),
             "likelihood_wins_before": float(won_before[part].mean()),
             "likelihood_wins_after": float(won_after[part].mean())}
            for q, part in enumerate(quartiles)
        ],
    }
    turned = np.flatnonzero(won_after & ~won_before)[:EXAMPLES]
    plot(x[turned], x[turned] - new.mean[turned], old.sd[turned], new.sd[turned],
         contrast, quartiles, os.path.join(out, "sd_contrast.png"))
    return summary


def plot(x, residual, sd_before, sd_after, contrast, quartiles, out_png: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from galaxy_model.figures import display_limits, to_display

    rows = len(x)
    figure = Figure(figsize=(8.0, 2.0 * rows + 2.6), layout="constrained")
    grid = figure.add_gridspec(rows + 1, 4, height_ratios=[1.0] * rows + [1.3])
    titles = ("input x", "x - f_mu", "f_sigma before", "f_sigma after")
    for row in range(rows):
        sky, scale = display_limits(x[row][None])
        limit = float(np.percentile(np.abs(residual[row]), 99.5)) or 1.0
        top = float(max(sd_before[row].max(), sd_after[row].max()))
        panels = [(to_display(x[row], sky, scale), {"cmap": "gray", "vmin": 0, "vmax": 1}),
                  (residual[row].mean(axis=0), {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}),
                  (sd_before[row].mean(axis=0), {"cmap": "magma", "vmin": 0, "vmax": top}),
                  (sd_after[row].mean(axis=0), {"cmap": "magma", "vmin": 0, "vmax": top})]
        for column, (image, style) in enumerate(panels):
            ax = figure.add_subplot(grid[row, column])
            shown = ax.imshow(np.squeeze(image), interpolation="nearest", **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[column], fontsize=9)
        figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    ax = figure.add_subplot(grid[rows, :])
    bins = np.linspace(min(0.0, contrast.min()), max(1.6, contrast.max()), 40)
    for q, part in enumerate(quartiles):
        ax.hist(contrast[part], bins=bins, histtype="step", linewidth=1.5,
                label=f"Gaussian-fit MSE quartile {q + 1}")
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set_xlabel("effective contrast 1 + a (1: the sd map as before; 0: flat)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    FigureCanvasAgg(figure)
    figure.savefig(out_png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the run the head started from")
    parser.add_argument("--after", required=True, help="the run with the contrast head")
    parser.add_argument("--data", default="builtin:heldout")
    parser.add_argument("--out", default="results/sd_contrast")
    parser.add_argument("--force", action="store_true", help="replace an existing result")
    args = parser.parse_args()
    with exit_on_user_error("sd_contrast"), \
            atomic_directory(args.out, force=args.force) as staging:
        summary = analyse(args.before, args.after, args.data, staging)
        with open(os.path.join(staging, "sd_contrast.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
