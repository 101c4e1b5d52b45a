"""ElementWise: y = a (op) b for two equally shaped bottoms, op in Add/Subtract/Multiply/Divide."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mochapy.layers.base import Layer, LayerConfig, register_layer


@register_layer
@dataclass(frozen=True)
class ElementWiseConfig(LayerConfig):
    operation: Literal["Add", "Subtract", "Multiply", "Divide"] = "Add"

    type_name = "ElementWise"
    can_do_bp = True
    n_bottoms = 2


class ElementWiseLayer(Layer):
    config: ElementWiseConfig

    def setup(self) -> None:
        a, b = self.bottoms
        if a.shape != b.shape:
            raise self.fail(f"bottoms {a.name!r} {a.shape} and {b.name!r} {b.shape} differ")
        self.y = self.make_top(self.config.tops[0], a.shape)

    def _forward_cpu(self) -> None:
        self._forward_with(self.backend.xp)

    def _backward_cpu(self) -> None:
        self._backward_with(self.backend.xp)

    def _forward_gpu(self) -> None:
        self.backend.kernels.elementwise_forward(
            self.config.operation, self.bottoms[0].data, self.bottoms[1].data, self.y.data
        )

    def _backward_gpu(self) -> None:
        a, b = self.bottoms
        self.backend.kernels.elementwise_backward(
            self.config.operation, a.data, b.data, self.y.data, self.y.diff, a.diff, b.diff
        )

    def _forward_with(self, xp: Any) -> None:
        op = {"Add": xp.add, "Subtract": xp.subtract, "Multiply": xp.multiply,
              "Divide": xp.divide}[self.config.operation]
        op(self.bottoms[0].data, self.bottoms[1].data, out=self.y.data)

    def _backward_with(self, xp: Any) -> None:
        a, b = self.bottoms
        dy, op = self.y.diff, self.config.operation
        if a.diff is not None:
            if op in ("Add", "Subtract"):
                a.diff[...] = dy
            elif op == "Multiply":
                xp.multiply(dy, b.data, out=a.diff)
            else:
                xp.divide(dy, b.data, out=a.diff)
        if b.diff is not None:
            if op == "Add":
                b.diff[...] = dy
            elif op == "Subtract":
                xp.negative(dy, out=b.diff)
            elif op == "Multiply":
                xp.multiply(dy, a.data, out=b.diff)
            else:  # d(a/b)/db = -a / b^2 = -y / b
                xp.multiply(dy, self.y.data, out=b.diff)
                xp.divide(b.diff, b.data, out=b.diff)
                xp.negative(b.diff, out=b.diff)


ElementWiseConfig.layer_class = ElementWiseLayer
