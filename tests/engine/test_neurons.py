"""Neurons: forward against independent closed forms, backward against finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from mochapy.backends import CPUBackend
from mochapy.errors import ConfigError
from mochapy.neurons import (
    EXP_INPUT_CAP,
    Exponential,
    Identity,
    Neuron,
    ReLU,
    Sigmoid,
    Tanh,
    make_neuron,
)

CPU64 = CPUBackend("float64")
CPU32 = CPUBackend("float32")


def exp_capped(x: float) -> float:
    return math.exp(min(x, EXP_INPUT_CAP))


# (neuron, elementwise closed form written without numpy's vector functions where possible)
CASES = [
    (Identity(), lambda v: v),
    (ReLU(), lambda v: v if v > 0 else 0.0),
    (ReLU(epsilon=0.1), lambda v: max(v, 0.1)),
    (Exponential(), exp_capped),
    (Exponential(shift=0.001), lambda v: exp_capped(v) + 0.001),
    (Sigmoid(), lambda v: float(expit(v))),
    (Tanh(), math.tanh),
]
IDS = ["Identity", "ReLU", "ReLU-eps", "Exponential", "Exponential-shift", "Sigmoid", "Tanh"]


def inputs_for(neuron: Neuron, rng: np.random.Generator) -> np.ndarray:
    """Inputs spread over the interesting range, kept away from kinks by more than the FD step."""
    x = rng.uniform(-4, 4, size=(6, 7))
    if isinstance(neuron, ReLU):
        near = np.abs(x - neuron.epsilon) < 1e-3
        x[near] += 1e-2
        x[0, :3] = [neuron.epsilon - 0.5, neuron.epsilon + 0.5, -3.0]
    if isinstance(neuron, Exponential):
        x[0, :4] = [EXP_INPUT_CAP - 1.0, EXP_INPUT_CAP + 0.5, 95.0, 1000.0]
    return x


@pytest.mark.parametrize(("neuron", "closed_form"), CASES, ids=IDS)
def test_forward_matches_closed_form(neuron: Neuron, closed_form, rng) -> None:
    x = inputs_for(neuron, rng)
    y = np.empty_like(x)
    neuron.forward(CPU64, x, y)
    expected = np.vectorize(closed_form, otypes=[float])(x)
    np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize(("neuron", "closed_form"), CASES, ids=IDS)
def test_backward_matches_finite_differences(neuron: Neuron, closed_form, rng) -> None:
    """Neurons act elementwise, so every entry is differenced at once (and Exponential's
    exp(87) entry cannot swamp the others, as it would in one summed objective)."""
    x = inputs_for(neuron, rng)
    upstream = rng.normal(size=x.shape)
    step = 1e-6
    y, plus, minus = (np.empty_like(x) for _ in range(3))
    neuron.forward(CPU64, x + step, plus)
    neuron.forward(CPU64, x - step, minus)
    numeric = upstream * (plus - minus) / (2 * step)
    neuron.forward(CPU64, x, y)
    dx = np.empty_like(x)
    neuron.backward(CPU64, x, y, upstream, dx)
    scale = np.maximum(np.abs(dx), 1.0)
    assert np.all(np.abs(dx - numeric) <= 1e-6 * scale), (dx, numeric)


def test_exponential_is_flat_above_the_overflow_guard() -> None:
    x = np.array([EXP_INPUT_CAP + 1e-3, 100.0, 1e6])
    y, dx = np.empty(3), np.empty(3)
    Exponential().forward(CPU64, x, y)
    Exponential().backward(CPU64, x, y, np.ones(3), dx)
    np.testing.assert_array_equal(y, math.exp(EXP_INPUT_CAP))
    np.testing.assert_array_equal(dx, 0.0)


def test_a_shifted_exponentials_gradient_keeps_the_digits_of_a_small_exp() -> None:
    """The slope is exp(x) itself, not y - shift: in float32, 0.001 + 1e-9 - 0.001 is 0."""
    x = np.array([-21.0, -5.0, 0.0], dtype=np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    Exponential(shift=0.001).forward(CPU32, x, y)
    Exponential(shift=0.001).backward(CPU32, x, y, np.ones_like(x), dx)
    np.testing.assert_allclose(dx, np.exp(x.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("neuron", [Exponential(), Exponential(shift=0.001), Sigmoid(), Tanh()],
                         ids=str)
def test_float32_extremes_stay_finite_without_warnings(neuron: Neuron) -> None:
    x = np.array([-1e4, -100.0, 0.0, 88.0, 89.0, 100.0, 1e4], dtype=np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        neuron.forward(CPU32, x, y)
        neuron.backward(CPU32, x, y, np.ones_like(x), dx)
    assert np.isfinite(y).all() and np.isfinite(dx).all()


@pytest.mark.parametrize(("neuron", "closed_form"), CASES, ids=IDS)
def test_output_buffer_may_alias_the_gradient(neuron: Neuron, closed_form, rng) -> None:
    """backward(dx is dy) gives what a separate dx gives: layers reuse one buffer."""
    x = inputs_for(neuron, rng)
    y = np.empty_like(x)
    neuron.forward(CPU64, x, y)
    dy = rng.normal(size=x.shape)
    separate = np.empty_like(x)
    neuron.backward(CPU64, x, y, dy, separate)
    shared = dy.copy()
    neuron.backward(CPU64, x, y, shared, shared)
    np.testing.assert_array_equal(shared, separate)


@pytest.mark.parametrize(("neuron", "closed_form"), CASES, ids=IDS)
def test_forward_may_run_in_place(neuron: Neuron, closed_form, rng) -> None:
    x = inputs_for(neuron, rng)
    separate = np.empty_like(x)
    neuron.forward(CPU64, x, separate)
    neuron.forward(CPU64, x, x)
    np.testing.assert_array_equal(x, separate)


def test_relu_gradient_uses_the_input_not_the_output() -> None:
    """Mocha's bug: from the output alone, ReLU(eps) cannot tell x = eps - 1 from x = eps."""
    relu = ReLU(epsilon=0.5)
    x = np.array([-0.5, 0.5 + 1e-9, 2.0])
    y, dx = np.empty(3), np.empty(3)
    relu.forward(CPU64, x, y)
    relu.backward(CPU64, x, y, np.ones(3), dx)
    np.testing.assert_array_equal(y, [0.5, 0.5 + 1e-9, 2.0])
    np.testing.assert_array_equal(dx, [0.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(None, Identity()), ("Tanh", Tanh()), ({"type": "ReLU", "epsilon": 0.01}, ReLU(0.01)),
     ({"type": "ReLU", "epsilon": "1e-3"}, ReLU(1e-3)),
     ({"type": "Exponential", "cap": 0, "shift": 0.001}, Exponential(cap=0.0, shift=0.001))],
)
def test_make_neuron_parses_yaml_forms(spec, expected) -> None:
    assert make_neuron(spec, "layer 'x'") == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("Softplus", "unknown neuron 'Softplus'"), ({"type": "Tanh", "epsilon": 1}, "no field"),
     ({"epsilon": 1}, "mapping with 'type'"), ({"type": "ReLU", "epsilon": "big"}, "bad neuron"),
     (3, "mapping with 'type'"), ({"type": "Exponential", "shift": "inf"}, "finite")],
)
def test_make_neuron_rejects_bad_specs(spec, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        make_neuron(spec, "layer 'x'")
    assert "layer 'x'" in str(info.value) and "\n" not in str(info.value)
