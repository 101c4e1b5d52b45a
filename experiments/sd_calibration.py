"""Why a trained galaxy VAE loses the likelihood comparison: the level of its sd, or its shape?

    python experiments/sd_calibration.py --run results/galaxy_vae_z32 [--run ...]
                                         [--data builtin:heldout] [--out results/sd_calibration]

For each run, on every image of --data, beside the run's likelihood-win fraction (x more probable
under N(f_mu, f_sigma^2) at z = g_mu(x) than under the Gaussian fit at its best sigma):
- one scale for all images: f_sigma times t, t on a grid; if no t does better than 1, the sd is
  calibrated on average;
- one scale per image: f_sigma times that image's best t, t^2 = mean((x - f_mu)^2 / f_sigma^2).
  The gap to the run's own fraction is what the sd head loses by misjudging each image's overall
  sd level while getting its shape over the pixels right;
- one contrast and scale per image: log f_sigma scaled about its image mean by c (c on a grid from
  0, a flat sd, to 1.5), then that image's best scale; the best c per image. The gap to the
  previous column is what the sd head loses by giving every image the same contrast (the
  ContrastLevel layer of experiments/galaxy_vae_z32_contrast.yaml learns one per image);
- what predicts that level, log t^2: R^2 of a least-squares fit (on half the images, scored on the
  other half) from g_mu(x), and from a noise estimate read off the image itself (the NoiseLevel
  layer's: a clipped mean of neighbouring-pixel differences) with the mean log f_sigma. If the image
  predicts it and the latent does not, the encoder does not carry the galaxy's noise level, and
  f_sigma(z) cannot know it.
Writes sd_calibration.json and sd_calibration.md into --out.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from mochapy.cli_errors import exit_on_user_error
from mochapy.outputs import atomic_directory

GLOBAL_SCALES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)
CONTRASTS = tuple(np.linspace(0.0, 1.5, 16))


def per_image_z2(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """mean((x - mu)^2 / sigma^2) over each image's pixels: its best sd scale, squared."""
    z = ((x - mean) / sd).reshape(len(x), -1)
    return np.mean(z * z, axis=1)


def best_contrast_loglik(
    x: np.ndarray, mean: np.ndarray, sd: np.ndarray, contrasts: tuple[float, ...] = CONTRASTS
) -> np.ndarray:
    """Each image's best log-likelihood over sd maps exp(m + c (log sd - m)) times t, m the
    image's mean log sd, c from `contrasts` and t at its best (per_image_z2)."""
    from galaxy_model import metrics

    log_sd = np.log(sd)
    centre = log_sd.reshape(len(x), -1).mean(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    best = np.full(len(x), -np.inf)
    for c in contrasts:
        shaped = np.exp(centre + c * (log_sd - centre))
        t = np.sqrt(per_image_z2(x, mean, shaped)).reshape(centre.shape)
        best = np.maximum(best, metrics.diag_gaussian_loglik(x, mean, shaped * t))
    return best


def held_out_r2(features: np.ndarray, target: np.ndarray) -> float:
    """R^2 on the second half of a least-squares fit (with intercept) on the first half."""
    design = np.column_stack([features, np.ones(len(features))])
    half = len(design) // 2
    coef = np.linalg.lstsq(design[:half], target[:half], rcond=None)[0]
    residual = target[half:] - design[half:] @ coef
    return float(1.0 - residual.var() / target[half:].var())


def analyse(run_dir: str, data: str) -> dict:
    from galaxy_model import metrics
    from galaxy_model.baseline import fit_gaussian2d
    from galaxy_model.builtin import load
    from galaxy_model.model import GalaxyVAE
    from mochapy.layers.noise_level import log_noise_sd

    model = GalaxyVAE.load(run_dir)
    x = model.check_images(load(data).data, data)
    z_mu, _ = model.encode(x)
    recon = model.decode(z_mu)
    baseline = fit_gaussian2d(x).model.reshape(x.shape)
    x64 = x.astype(np.float64)

    def wins(scale: np.ndarray | float) -> float:
        """Likelihood wins with every f_sigma times `scale` (one number, or one per image)."""
        scaled = recon.sd * np.reshape(scale, (-1,) + (1,) * (x.ndim - 1))
        return float(np.mean(metrics.likelihood_win(x64, recon.mean, scaled, baseline)))

    best_t2 = per_image_z2(x64, recon.mean, recon.sd)
    level = np.log(best_t2)
    mean_log_sd = np.log(recon.sd.astype(np.float64)).reshape(len(x), -1).mean(axis=1)
    image_features = np.column_stack([log_noise_sd(x64, floor=1e-6), mean_log_sd])
    return {
        "run": run_dir,
        "data": data,
        "n_images": len(x),
        "likelihood_win_fraction": wins(1.0),
        "global_scale_wins": {f"{t:g}": wins(t) for t in GLOBAL_SCALES},
        "per_image_scale_wins": wins(np.sqrt(best_t2)),
        "per_image_contrast_and_scale_wins": float(np.mean(
            best_contrast_loglik(x64, recon.mean, recon.sd.astype(np.float64))
            > metrics.best_sigma_gaussian_loglik(x64, baseline)
        )),
        "log_level_sd": float(level.std()),
        "r2_level_from_latent": held_out_r2(z_mu, level),
        "r2_level_from_image_noise": held_out_r2(image_features, level),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| run | likelihood wins | best single sd scale (wins) | each image's best sd scale "
        "(wins) | each image's best contrast and scale (wins) | sd of log level | R² of level "
        "from g_mu(x) | R² of level from image noise |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        t, best = max(row["global_scale_wins"].items(), key=lambda item: item[1])
        lines.append(
            f"| `{row['run']}` | {100 * row['likelihood_win_fraction']:.1f}% | {t} "
            f"({100 * best:.1f}%) | {100 * row['per_image_scale_wins']:.1f}% | "
            f"{100 * row['per_image_contrast_and_scale_wins']:.1f}% | "
            f"{row['log_level_sd']:.2f} | {row['r2_level_from_latent']:.2f} | "
            f"{row['r2_level_from_image_noise']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="a run directory (repeat)")
    parser.add_argument("--data", default="builtin:heldout")
    parser.add_argument("--out", default="results/sd_calibration")
    parser.add_argument("--force", action="store_true", help="replace an existing result")
    args = parser.parse_args()
    with exit_on_user_error("sd_calibration"), \
            atomic_directory(args.out, force=args.force) as staging:
        rows = [analyse(run, args.data) for run in args.run]
        with open(os.path.join(staging, "sd_calibration.json"), "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
        table = markdown(rows)
        with open(os.path.join(staging, "sd_calibration.md"), "w", encoding="utf-8") as handle:
            handle.write(f"# sd calibration on {args.data}\n\n{table}")
    print(table, end="")


if __name__ == "__main__":
    main()
