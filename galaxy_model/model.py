"""A trained galaxy VAE as a Python object: encode, decode, reconstruct and sample.

Wraps a mochapy run directory (from `mochapy run` or a shipped run such as results/galaxy_vae_full).
The run's net.yaml names the blobs' roles (`roles:`), so no net is rebuilt by hand, and its
training.json records the image shape and the latent width (`blob_shapes`):
    model = GalaxyVAE.load("runs/galaxy_vae")
    z_mu, z_sd = model.encode(images)          # g_mu(x), g_sigma(x)
    x_mu, x_sd = model.decode(z_mu)            # f_mu(z), f_sigma(z)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mochapy.errors import DataError
from mochapy.run_directory import recorded_blob_shapes
from mochapy.runs import LoadedRun, Predictor, load_run

REQUIRED_ROLES = ("input", "latent_mean", "latent_sd", "latent", "recon_mean", "recon_sd")


@dataclass
class Decoded:
    mean: np.ndarray  # f_mu(z), (N, C, H, W)
    sd: np.ndarray  # f_sigma(z), (N, C, H, W)


class GalaxyVAE:
    """Encoder g and decoder f of a trained run, each a pruned mochapy net."""

    def __init__(self, run: LoadedRun, batch_size: int = 100, backend: str = "cpu") -> None:
        roles = run.config.roles
        missing = [r for r in REQUIRED_ROLES if r not in roles]
        if missing:
            raise DataError(
                f"{run.path}/net.yaml: 'roles' lacks {', '.join(missing)}; "
                "the galaxy VAE needs every one of " + ", ".join(REQUIRED_ROLES)
            )
        self.run = run
        self.roles = roles
        recorded = recorded_blob_shapes(run.path) or {}
        self.image_shape = recorded.get(roles["input"]) or self._input_shape(run)
        self.encoder = Predictor(
            run, {roles["input"]: self.image_shape}, [roles["latent_mean"], roles["latent_sd"]],
            batch_size, backend,
        )
        latent_dim = self._latent_dim(run)
        if roles["latent"] in recorded and recorded[roles["latent"]] != (latent_dim,):
            raise DataError(
                f"{run.path}/training.json: latent {roles['latent']!r} is recorded as "
                f"{recorded[roles['latent']]} per image, the encoder gives ({latent_dim},)"
            )
        self.latent_dim = latent_dim
        self.decoder = Predictor(
            run, {roles["latent"]: (latent_dim,)}, [roles["recon_mean"], roles["recon_sd"]],
            batch_size, backend,
        )

    @classmethod
    def load(cls, run_dir: str, batch_size: int = 100, backend: str = "cpu") -> GalaxyVAE:
        return cls(load_run(run_dir), batch_size, backend)

    @staticmethod
    def _input_shape(run: LoadedRun) -> tuple[int, ...]:
        """The per-image shape (C, S, S) of a run whose training.json does not record it (trained
        before it was recorded): from the weights of the layer that reads the input, square
        images of 1 or 3 bands."""
        input_blob = run.config.roles["input"]
        reader = next(
            (c for c in run.config.layers if input_blob in c.bottoms and hasattr(c, "output_dim")),
            None,
        )
        key = f"{(reader.param_key or reader.name) if reader else ''}.weight"
        if key not in run.params:
            raise DataError(f"{run.path}: no weights for the layer reading {input_blob!r}")
        n_in = run.params[key].shape[0]
        for bands in (1, 3):
            size = int(round(np.sqrt(n_in / bands)))
            if bands * size * size == n_in:
                return (bands, size, size)
        raise DataError(f"{run.path}: training.json records no image shape and {n_in} inputs "
                        "are not square images of 1 or 3 bands")

    def _latent_dim(self, run: LoadedRun) -> int:
        """The width of g_mu(x), read off the built encoder (whatever layer makes it)."""
        shape = self.encoder.net.blobs[self.roles["latent_mean"]].shape
        if len(shape) != 2:
            raise DataError(f"{run.path}: latent mean {self.roles['latent_mean']!r} is not one "
                            f"vector per image (shape {shape[1:]})")
        return int(shape[1])

    def check_images(self, images: np.ndarray, where: str = "data") -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] != self.image_shape:
            raise DataError(
                f"{where}: images have shape {images.shape[1:]}, the model takes {self.image_shape}"
            )
        return images

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """g_mu(x) and g_sigma(x), each (N, latent_dim)."""
        out = self.encoder(**{self.roles["input"]: self.check_images(images)})
        return out[self.roles["latent_mean"]], out[self.roles["latent_sd"]]

    def decode(self, z: np.ndarray) -> Decoded:
        """f_mu(z) and f_sigma(z) as images."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.latent_dim)
        out = self.decoder(**{self.roles["latent"]: z})
        shape = (len(z), *self.image_shape)
        return Decoded(out[self.roles["recon_mean"]].reshape(shape),
                       out[self.roles["recon_sd"]].reshape(shape))

    def reconstruct(self, images: np.ndarray) -> Decoded:
        """f(g_mu(x)): the poster's point reconstruction."""
        return self.decode(self.encode(images)[0])

    def sample_posterior(
        self, images: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, Decoded]:
        """z ~ q(z|x) and f(z), as in the poster's conditional-distribution figure."""
        mu, sd = self.encode(images)
        z = mu + sd * rng.standard_normal(mu.shape).astype(np.float32)
        return z, self.decode(z)
