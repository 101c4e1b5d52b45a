"""InnerProduct: y = neuron(x W + b), the fully connected layer (x flattened to (N, in))."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mochapy.layers.base import Layer, LayerConfig, register_layer
from mochapy.neurons import Identity, Neuron
from mochapy.params import Constraint, Initializer, ParamSpec, Regularizer


@register_layer
@dataclass(frozen=True)
class InnerProductConfig(LayerConfig):
    output_dim: int = 0
    neuron: Neuron = field(default_factory=Identity)
    weight_init: Initializer = field(default_factory=Initializer)
    bias_init: Initializer = field(default_factory=lambda: Initializer("Constant", value=0.0))
    weight_regu: Regularizer = field(default_factory=Regularizer)
    bias_regu: Regularizer = field(default_factory=lambda: Regularizer("none"))
    weight_cons: Constraint = field(default_factory=Constraint)
    bias_cons: Constraint = field(default_factory=Constraint)
    weight_lr: float = 1.0
    bias_lr: float = 2.0
    param_key: str = ""

    type_name = "InnerProduct"
    has_param = True
    can_do_bp = True

    def validate(self) -> None:
        super().validate()
        self.require(self.output_dim > 0, "output_dim", "must be a positive integer")


class InnerProductLayer(Layer):
    config: InnerProductConfig

    def setup(self) -> None:
        cfg = self.config
        x = self.bottoms[0]
        n, n_in = x.batch_size, int(np.prod(x.shape[1:]))
        key = cfg.param_key or cfg.name
        self.weight = self.declare_param(
            "weight", (n_in, cfg.output_dim),
            ParamSpec(cfg.weight_init, cfg.weight_regu, cfg.weight_cons, cfg.weight_lr), key,
        )
        self.bias = self.declare_param(
            "bias", (cfg.output_dim,),
            ParamSpec(cfg.bias_init, cfg.bias_regu, cfg.bias_cons, cfg.bias_lr), key,
        )
        self.y = self.make_top(cfg.tops[0], (n, cfg.output_dim))
        # The pre-activation is kept so the neuron's backward can see its input.
        self.pre = self.backend.empty((n, cfg.output_dim))
        self.dpre = self.backend.empty((n, cfg.output_dim))
        # On the CPU an Identity neuron works in place: no copies of y and its gradient.
        self.in_place = isinstance(cfg.neuron, Identity)

    def _forward_cpu(self) -> None:
        pre = self.y.data if self.in_place else self.pre
        self.backend.gemm(self.bottoms[0].flat(), self.weight.data, pre)
        self.backend.kernels.bias_neuron_forward(self.config.neuron, pre, self.bias.data,
                                                 self.y.data)

    def _backward_cpu(self) -> None:
        backend, x = self.backend, self.bottoms[0]
        pre = self.y.data if self.in_place else self.pre
        dpre = self.y.diff if self.in_place else self.dpre
        backend.kernels.neuron_backward_column_sum(
            self.config.neuron, pre, self.y.data, self.y.diff, dpre, self.bias.grad
        )
        backend.gemm(x.flat(), dpre, self.weight.grad, trans_a=True)
        if x.diff is not None:
            backend.gemm(dpre, self.weight.data, x.flat_diff(), trans_b=True)

    def _forward_gpu(self) -> None:
        self.backend.gemm(self.bottoms[0].flat(), self.weight.data, self.pre)
        self.backend.kernels.bias_neuron_forward(
            self.config.neuron, self.pre, self.bias.data, self.y.data
        )

    def _backward_gpu(self) -> None:
        backend, x = self.backend, self.bottoms[0]
        # The neuron's gradient and the bias gradient (its column sums) in one kernel.
        backend.kernels.neuron_backward_column_sum(
            self.config.neuron, self.pre, self.y.data, self.y.diff, self.dpre, self.bias.grad
        )
        backend.gemm(x.flat(), self.dpre, self.weight.grad, trans_a=True)
        if x.diff is not None:
            backend.gemm(self.dpre, self.weight.data, x.flat_diff(), trans_b=True)


InnerProductConfig.layer_class = InnerProductLayer
