"""What went non-finite first when training diverges, for a DivergenceError a user can act on."""

from __future__ import annotations

import math

import numpy as np

from mochapy.net import Net


def first_nonfinite(net: Net, loss: float) -> str:
    """What first went NaN/Inf: a layer's output or loss, a gradient, the summed loss, a
    parameter, or (all of them finite) only the squared gradient norm."""
    where = net.first_nonfinite()
    if where is not None:
        return f"NaN/Inf first in {where}"
    if not math.isfinite(loss):
        return "NaN/Inf first in the summed loss (every layer's loss is finite: their sum " \
               "overflows)"
    backend = net.backend
    for key, param in net.params.params.items():
        if not backend.all_finite(param.data):
            return f"NaN/Inf first in parameter {key!r}"
    largest = max(net.params.params.items(),
                  key=lambda item: float(np.abs(backend.to_host(item[1].grad)).max()))
    value = float(np.abs(backend.to_host(largest[1].grad)).max())
    return (f"every loss, gradient and parameter is finite, but the squared gradient norm "
            f"overflows {backend.dtype.name} (largest gradient {value:.3g}, in "
            f"{largest[0]!r})")
