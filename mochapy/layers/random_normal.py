"""RandomNormal: fills its top with N(0, 1) draws each forward (the reparameterisation's eps)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mochapy.layers.base import Layer, LayerConfig, register_layer, rng_state, set_rng_state


@register_layer
@dataclass(frozen=True)
class RandomNormalConfig(LayerConfig):
    output_dims: tuple[int, ...] = ()
    batch_size: int = 0  # 0: the net's batch size

    type_name = "RandomNormal"
    is_source = True
    n_bottoms = 0

    def validate(self) -> None:
        super().validate()
        self.require(bool(self.output_dims), "output_dims", "must list the sample's dimensions")
        self.require(all(d > 0 for d in self.output_dims), "output_dims", "must be positive")
        self.require(self.batch_size >= 0, "batch_size", "must be >= 0")


class RandomNormalLayer(Layer):
    """CPU draws come from a PCG64 stream; GPU draws from a counter-based Philox kernel."""

    config: RandomNormalConfig

    def setup(self) -> None:
        n = self.config.batch_size or self.ctx.batch_size
        self.eps = self.make_top(self.config.tops[0], (n, *self.config.output_dims))
        self.rng = self.ctx.rng(self.config.name)
        self.counter = 0  # Philox counter: draws so far, so a replayed graph never repeats them
        self.seed = int(self.rng.integers(2**63))
        # On the GPU {seed, counter} live on the device, which advances the counter itself.
        self.device_state = (
            self.backend.kernels.random_state(self.seed) if self.backend.kind == "gpu" else None
        )

    def _forward_cpu(self) -> None:
        self.rng.standard_normal(out=self.eps.data, dtype=self.eps.data.dtype)

    def _forward_gpu(self) -> None:
        self.backend.kernels.philox_normal(self.eps.data, self.device_state)

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.device_state is not None:
            self.counter = self.backend.kernels.read_counter(self.device_state)
        return {"rng": rng_state(self.rng), "counter": np.array(self.counter)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        set_rng_state(self.rng, state["rng"])
        self.counter = int(state["counter"])
        if self.device_state is not None:
            self.backend.kernels.write_counter(self.device_state, self.counter)


RandomNormalConfig.layer_class = RandomNormalLayer
