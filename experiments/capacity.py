"""What limits a trained galaxy VAE's MSE wins: its encoder, its decoder, or its output layer?

    python experiments/capacity.py --run results/galaxy_vae_full [--data builtin:heldout]
                                   [--train builtin:train-large] [--out results/capacity]

Three numbers beside the run's own MSE-win fraction (f_mu(g_mu(x)) against the Gaussian fit):
- best latent: z fitted to each image by gradient descent on ||x - f_mu(z)||^2 from g_mu(x), the
  decoder fixed. The gap to the run's own fraction is what a better encoder could gain; the
  fraction itself bounds what this decoder can reach with any encoder.
- PCA-k: each image projected on the top k principal components of the training images (plus
  their mean), for k = 8 ... 128. Every output of a decoder whose last layer reads 128 hidden
  units lies in a 128-dimensional affine subspace, so PCA-128 bounds any such decoder.
Writes capacity.json and capacity.md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import h5py
import numpy as np
import scipy.linalg

from mochapy.cli_errors import exit_on_user_error
from mochapy.outputs import atomic_directory

DECODER = ("dec1", "dec2", "x_mu")  # ReLU, ReLU, linear: the poster's decoder (examples/)


def load_decoder(run_dir: str) -> dict[str, np.ndarray]:
    with h5py.File(os.path.join(run_dir, "weights.h5"), "r") as f:
        params = {name: f["params"][name][()].astype(np.float64) for name in f["params"]}
    for layer in DECODER:
        if f"{layer}.weight" not in params:
            raise SystemExit(f"{run_dir}: no layer {layer!r}; this script expects the poster's net")
    return params


def decode(params: dict[str, np.ndarray], z: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    hidden = [z]
    for layer in DECODER[:-1]:
        hidden.append(np.maximum(hidden[-1] @ params[f"{layer}.weight"] + params[f"{layer}.bias"],
                                 0.0))
    last = DECODER[-1]
    return hidden[-1] @ params[f"{last}.weight"] + params[f"{last}.bias"], hidden


def latent_gradient(params: dict[str, np.ndarray], x: np.ndarray,
                    z: np.ndarray) -> tuple[float, np.ndarray]:
    """The summed squared error ||x - f_mu(z)||^2 and its gradient with respect to z."""
    out, hidden = decode(params, z)
    grad = 2 * (out - x)
    for i in reversed(range(len(DECODER))):
        grad = grad @ params[f"{DECODER[i]}.weight"].T  # into hidden[i], the layer's input
        if i > 0:
            grad *= hidden[i] > 0  # back through the ReLU that made hidden[i]
    return float(((out - x) ** 2).sum()), grad


def fit_latents(params: dict[str, np.ndarray], x: np.ndarray, z0: np.ndarray, steps: int,
                lr: float = 0.01) -> np.ndarray:
    """Adam on each image's z, minimising its squared reconstruction error."""
    z, m, v = z0.copy(), np.zeros_like(z0), np.zeros_like(z0)
    for t in range(1, steps + 1):
        grad = latent_gradient(params, x, z)[1]
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        z -= lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)
    return z


def pca_wins(train: np.ndarray, x: np.ndarray, baseline_mse: np.ndarray,
             ranks: tuple[int, ...]) -> dict[int, float]:
    mean = train.mean(axis=0)
    centred = train - mean
    _, vectors = scipy.linalg.eigh(centred.T @ centred)
    vectors = vectors[:, ::-1]
    wins = {}
    for k in ranks:
        basis = vectors[:, :k]
        projected = mean + (x - mean) @ basis @ basis.T
        wins[k] = float((((x - projected) ** 2).mean(axis=1) < baseline_mse).mean())
    return wins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="results/galaxy_vae_full")
    parser.add_argument("--data", default="builtin:heldout")
    parser.add_argument("--train", default="builtin:train-large")
    parser.add_argument("--train-images", type=int, default=30000)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="results/capacity")
    parser.add_argument("--force", action="store_true", help="replace an existing result")
    args = parser.parse_args()
    with exit_on_user_error("capacity"), atomic_directory(args.out, force=args.force) as staging:
        text = measure(args, staging)
    print(text)


def measure(args: argparse.Namespace, staging: str) -> str:
    """Compute the three numbers, write capacity.json and capacity.md into `staging`."""
    from galaxy_model.baseline import fit_gaussian2d
    from galaxy_model.builtin import load
    from galaxy_model.model import GalaxyVAE

    start = time.time()
    data = load(args.data)
    x = data.data.reshape(len(data), -1).astype(np.float64)
    baseline_mse = ((x - fit_gaussian2d(data.data).model.reshape(x.shape)) ** 2).mean(axis=1)
    model = GalaxyVAE.load(args.run)
    z_mu, _ = model.encode(data.data)
    params = load_decoder(args.run)
    own = ((x - decode(params, z_mu.astype(np.float64))[0]) ** 2).mean(axis=1)
    fitted = fit_latents(params, x, z_mu.astype(np.float64), args.steps)
    best = ((x - decode(params, fitted)[0]) ** 2).mean(axis=1)
    train = load(args.train).data[: args.train_images]
    ranks = (8, 16, 32, 64, 128)
    pca = pca_wins(train.reshape(len(train), -1).astype(np.float64), x, baseline_mse, ranks)
    result = {
        "run": args.run, "data": args.data, "n_images": len(x),
        "mse_win_fraction_encoder": float((own < baseline_mse).mean()),
        "mse_win_fraction_best_latent": float((best < baseline_mse).mean()),
        "latent_fit_steps": args.steps,
        "pca_train": f"{args.train} (first {len(train)} images)",
        "mse_win_fraction_pca": {str(k): v for k, v in pca.items()},
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(staging, "capacity.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    lines = [
        f"MSE wins against the Gaussian fit on {args.data} ({len(x)} images), run {args.run}:",
        "",
        "| reconstruction | MSE wins |",
        "|---|---|",
        f"| f_mu(g_mu(x)): the run's encoder | {100 * result['mse_win_fraction_encoder']:.1f}% |",
        f"| f_mu(z*), z* fitted to each image ({args.steps} Adam steps) | "
        f"{100 * result['mse_win_fraction_best_latent']:.1f}% |",
        *[f"| projection on the top {k} principal components of {args.train} | "
          f"{100 * v:.1f}% |" for k, v in pca.items()],
    ]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(staging, "capacity.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return text


if __name__ == "__main__":
    main()
