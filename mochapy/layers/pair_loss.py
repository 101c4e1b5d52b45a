"""What SquareLoss and GaussianKLLoss share: two same-shaped bottoms, a weight, the batch mean.

Each is a sink with a loss; the CPU path is the subclass's NumPy code, the GPU path one kernel
(named by `gpu_kernel`) that writes the loss and, in training, both gradients, so the GPU
backward has nothing left to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mochapy.layers.base import Layer, LayerConfig


@dataclass(frozen=True)
class PairLossConfig(LayerConfig):
    """A loss of two bottoms of one shape, times `weight`, averaged over the batch."""

    weight: float = 1.0

    has_loss = True
    can_do_bp = True
    is_sink = True
    n_bottoms = 2


class PairLossLayer(Layer):
    """Checks the bottoms' shapes and sets `scale` = weight / batch size and `loss_value`."""

    config: PairLossConfig
    gpu_kernel: ClassVar[str]  # the kernel library's op: (a, b, scale, loss, da, db)

    def setup(self) -> None:
        first, second = self.bottoms
        if first.flat().shape != second.flat().shape:
            raise self.fail(
                f"bottoms {first.name!r} {first.shape} and {second.name!r} {second.shape} differ"
            )
        self.scale = self.config.weight / first.batch_size
        self.loss_value = self.backend.zeros(1)

    def _forward_gpu(self) -> None:
        first, second = self.bottoms
        getattr(self.backend.kernels, self.gpu_kernel)(
            first.flat(), second.flat(), self.scale, self.loss_value,
            None if first.diff is None else first.flat_diff(),
            None if second.diff is None else second.flat_diff(),
        )

    def _backward_gpu(self) -> None:
        """The forward kernel already wrote the gradients."""
