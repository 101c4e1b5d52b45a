"""Parameters: initializers' distributions, YAML parsing of init/regu/cons, the flat store."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kstest

from mochapy.backends import CPUBackend
from mochapy.errors import ConfigError
from mochapy.params import (
    Constraint,
    Initializer,
    ParamSpec,
    ParamStore,
    Regularizer,
    parse_component,
)


def test_xavier_is_uniform_with_variance_one_over_fan_in(rng) -> None:
    w = Initializer("Xavier").sample((200, 300), rng)
    bound = np.sqrt(3 / 200)
    assert np.abs(w).max() <= bound
    assert kstest(w.ravel() / bound, "uniform", args=(-1, 2)).pvalue > 1e-3
    assert w.var() == pytest.approx(1 / 200, rel=0.02)


def test_gaussian_and_constant(rng) -> None:
    w = Initializer("Gaussian", mean=0.5, std=0.1).sample((100, 100), rng)
    assert w.mean() == pytest.approx(0.5, abs=0.003) and w.std() == pytest.approx(0.1, rel=0.02)
    np.testing.assert_array_equal(Initializer("Constant", value=-1).sample((3, 2), rng), -1.0)


@pytest.mark.parametrize("shape", [(20, 5), (5, 20), (2, 3, 4)])
def test_orthogonal_has_orthonormal_rows_or_columns(shape, rng) -> None:
    w = Initializer("Orthogonal", gain=2.0).sample(shape, rng).reshape(-1, shape[-1])
    small = min(w.shape)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-12)


@pytest.mark.parametrize(
    ("cls", "spec", "expected"),
    [(Initializer, None, Initializer()),
     (Initializer, {"type": "Gaussian", "std": 0.5}, Initializer("Gaussian", std=0.5)),
     (Regularizer, "L1", Regularizer("L1")),
     (Regularizer, None, Regularizer("none")),
     (Regularizer, {"type": "L2", "coefficient": 3}, Regularizer("L2", 3.0)),
     (Constraint, {"type": "L2", "threshold": 2, "every_n_iter": 5}, Constraint("L2", 2.0, 5))],
)
def test_components_parse_from_yaml_forms(cls, spec, expected) -> None:
    assert parse_component(cls, spec, "layer 'x': field 'f'") == expected


@pytest.mark.parametrize(
    ("cls", "spec", "message"),
    [(Initializer, {"type": "Zeros"}, "unknown type 'Zeros'"),
     (Regularizer, {"type": "L2", "coef": 1}, "unknown field 'coef'"),
     (Constraint, {"type": "L2", "every_n_iter": 2.5}, "expected an integer"),
     (Constraint, {"type": "L2", "threshold": True}, "expected a number"),
     (Initializer, 7, "expected a name or a mapping")],
)
def test_components_reject_bad_specs(cls, spec, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_component(cls, spec, "layer 'x': field 'f'")
    assert str(info.value).startswith("layer 'x': field 'f'")


def test_the_store_lays_parameters_out_in_one_buffer() -> None:
    store = ParamStore(CPUBackend("float64"), seed=3)
    a = store.declare("a.weight", (3, 2), ParamSpec(), "here")
    b = store.declare("a.bias", (2,), ParamSpec(init=Initializer("Constant", value=1)), "here")
    assert store.declare("a.weight", (3, 2), ParamSpec(), "there") is a
    store.allocate()
    assert store.data.shape == (8,) and store.grad.shape == (8,)
    assert np.shares_memory(a.data, store.data) and np.shares_memory(b.grad, store.grad)
    np.testing.assert_array_equal(store.data[6:], 1.0)
    copies = store.host_arrays()
    copies["a.bias"][...] = 5
    np.testing.assert_array_equal(b.data, 1.0)
    store.load_host_arrays({"a.weight": np.zeros((3, 2)), "a.bias": np.full(2, 7.0)}, "snap")
    np.testing.assert_array_equal(store.data, [0, 0, 0, 0, 0, 0, 7, 7])
    with pytest.raises(ConfigError, match="snap: no values for parameter 'a.bias'"):
        store.load_host_arrays({"a.weight": np.zeros((3, 2))}, "snap")
    with pytest.raises(ConfigError, match="'a.weight' has shape \\(2, 3\\)"):
        store.load_host_arrays({"a.weight": np.zeros((2, 3)), "a.bias": np.zeros(2)}, "snap")
