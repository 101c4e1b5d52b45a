"""Power: y = (scale * x + shift) ** power (Mocha's PowerLayer), e.g. an sd floor with shift."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mochapy.layers.base import Layer, LayerConfig, register_layer


@register_layer
@dataclass(frozen=True)
class PowerConfig(LayerConfig):
    power: float = 1.0
    scale: float = 1.0
    shift: float = 0.0

    type_name = "Power"
    can_do_bp = True


class PowerLayer(Layer):
    config: PowerConfig

    def setup(self) -> None:
        self.y = self.make_top(self.config.tops[0], self.bottoms[0].shape)
        self.base = self.backend.empty(self.bottoms[0].shape)

    def _forward_cpu(self) -> None:
        cfg = self.config
        base = self.y.data if cfg.power == 1 else self.base  # an affine map needs no power pass
        if cfg.scale == 1:  # a shift alone (the sd floors): one pass
            np.add(self.bottoms[0].data, cfg.shift, out=base)
        else:
            np.multiply(self.bottoms[0].data, cfg.scale, out=base)
            base += cfg.shift
        if cfg.power != 1:
            np.power(base, cfg.power, out=self.y.data)

    def _backward_cpu(self) -> None:
        x = self.bottoms[0]
        if x.diff is None:
            return
        cfg = self.config
        if cfg.power == 1:
            np.multiply(self.y.diff, cfg.scale, out=x.diff)
            return
        np.power(self.base, cfg.power - 1, out=x.diff)
        x.diff *= cfg.power * cfg.scale
        x.diff *= self.y.diff

    def _forward_gpu(self) -> None:
        cfg = self.config
        self.backend.kernels.power_forward(
            self.bottoms[0].data, cfg.scale, cfg.shift, cfg.power, self.base, self.y.data
        )

    def _backward_gpu(self) -> None:
        x = self.bottoms[0]
        if x.diff is not None:
            cfg = self.config
            self.backend.kernels.power_backward(
                self.base, cfg.scale, cfg.power, self.y.diff, x.diff
            )


PowerConfig.layer_class = PowerLayer
