"""Solvers against hand computations: SGD (momentum), Nesterov, Adam; lr multipliers; L2/L1
regularization; L2 norm constraints; lr and momentum policies; decay on validation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from mochapy.backends import get_backend
from mochapy.coffee import BreakContext, CoffeeLounge, ValidationPerformance
from mochapy.config import load_config
from mochapy.errors import ConfigError
from mochapy.net import Net
from mochapy.solvers import SolverConfig, make_solver
from mochapy.solvers.policies import parse_lr_policy, parse_mom_policy
from tests.helpers import all_indices, assert_gradient_close, build_net, central_difference

pytestmark = pytest.mark.usefixtures("cpu_loops")  # compiled CPU loops and NumPy paths

DATA = {"data": {"x": np.random.default_rng(0).normal(size=(6, 3)),
                 "y": np.random.default_rng(1).normal(size=(6, 2))}}
NET = [
    {"type": "MemoryData", "name": "data", "tops": ["x", "y"], "batch_size": 6},
    {"type": "InnerProduct", "name": "hidden", "bottoms": ["x"], "tops": ["h"], "output_dim": 4,
     "neuron": "Tanh", "bias_init": {"type": "Gaussian", "std": 0.3}},
    {"type": "InnerProduct", "name": "out", "bottoms": ["h"], "tops": ["pred"], "output_dim": 2},
    {"type": "SquareLoss", "name": "loss", "bottoms": ["pred", "y"]},
]


def solver_for(entries=NET, bias_lr: float | None = None, **fields):
    if bias_lr is not None:
        entries = copy.deepcopy(entries)
        for entry in entries:
            if entry["type"] == "InnerProduct":
                entry["bias_lr"] = bias_lr
    net = build_net(entries, DATA, seed=2)
    return make_solver(SolverConfig.from_mapping(fields, "test"), net)


def lr_multipliers(net: Net) -> np.ndarray:
    mult = np.empty(net.n_params)
    for param in net.params.params.values():
        mult[param.offset:param.offset + param.size] = param.spec.lr_mult
    return mult


def gradient_at_current_weights(net: Net) -> np.ndarray:
    net.forward()
    net.backward()
    return net.params.grad.copy()


# bias_lr None: InnerProduct's default (biases learn at twice the rate, a per-segment update);
# bias_lr 1: every multiplier is 1 (segments differ only by regularizer).
BIAS_LR = pytest.mark.parametrize("bias_lr", [None, 1.0], ids=["bias-lr-2", "uniform-lr"])


@BIAS_LR
def test_sgd_with_momentum_matches_hand_computation(bias_lr) -> None:
    lr, mu = 0.1, 0.8
    solver = solver_for(bias_lr=bias_lr, method="sgd", base_lr=lr, momentum=mu)
    net = solver.net
    mult = lr_multipliers(net)
    assert set(np.unique(mult)) == ({1.0} if bias_lr else {1.0, 2.0})
    w, v = net.params.data.copy(), np.zeros(net.n_params)
    for _ in range(3):
        g = gradient_at_current_weights(net)
        solver.update()
        v = mu * v - lr * mult * g
        w = w + v
        np.testing.assert_allclose(net.params.data, w, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(solver.state["velocity"], v, rtol=1e-14, atol=1e-16)


@BIAS_LR
def test_nesterov_matches_hand_computation(bias_lr) -> None:
    lr, mu = 0.05, 0.9
    solver = solver_for(bias_lr=bias_lr, method="nesterov", base_lr=lr, momentum=mu)
    net = solver.net
    mult = lr_multipliers(net)
    w, v = net.params.data.copy(), np.zeros(net.n_params)
    for _ in range(3):
        g = gradient_at_current_weights(net)
        solver.update()
        v_new = mu * v - lr * mult * g
        w = w - mu * v + (1 + mu) * v_new
        v = v_new
        np.testing.assert_allclose(net.params.data, w, rtol=1e-13, atol=1e-15)


@BIAS_LR
def test_adam_matches_hand_computation_with_bias_correction(bias_lr) -> None:
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-6
    solver = solver_for(bias_lr=bias_lr, method="adam", base_lr=lr, beta1=b1, beta2=b2,
                        epsilon=eps)
    net = solver.net
    mult = lr_multipliers(net)
    w, m, v = net.params.data.copy(), np.zeros(net.n_params), np.zeros(net.n_params)
    for t in range(1, 4):
        g = gradient_at_current_weights(net)
        solver.update()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        # Mocha folds the bias corrections into the step, so eps scales by sqrt(1 - b2^t).
        w = w - lr * mult * m_hat / (np.sqrt(v_hat) + eps / math.sqrt(1 - b2**t))
        np.testing.assert_allclose(net.params.data, w, rtol=1e-12, atol=1e-15)


def test_first_adam_step_moves_every_weight_by_about_lr() -> None:
    solver = solver_for(method="adam", base_lr=0.001)
    before = solver.net.params.data.copy()
    gradient_at_current_weights(solver.net)
    solver.update()
    step = np.abs(solver.net.params.data - before) / lr_multipliers(solver.net)
    np.testing.assert_allclose(step, 0.001, rtol=1e-4)


def test_lr_multipliers_scale_each_parameter() -> None:
    entries = copy.deepcopy(NET)
    entries[1].update(weight_lr=0.0, bias_lr=0.5)
    entries[2].update(weight_lr=3.0, bias_lr=1.0)
    solver = solver_for(entries, method="sgd", base_lr=0.1, momentum=0.0)
    params = solver.net.params.params
    before = solver.net.params.host_arrays()
    gradient_at_current_weights(solver.net)
    g = {k: p.grad.copy() for k, p in params.items()}
    solver.update()
    for key, mult in {"hidden.weight": 0.0, "hidden.bias": 0.5, "out.weight": 3.0,
                      "out.bias": 1.0}.items():
        np.testing.assert_allclose(params[key].data, before[key] - 0.1 * mult * g[key],
                                   rtol=1e-14, atol=1e-16, err_msg=key)


@pytest.mark.parametrize("kind", ["L2", "L1"])
def test_regularization_adds_regu_coef_times_its_gradient(kind) -> None:
    entries = copy.deepcopy(NET)
    entries[1]["weight_regu"] = {"type": kind, "coefficient": 2.0}
    entries[2]["weight_regu"] = "none"
    entries[2]["bias_regu"] = {"type": kind, "coefficient": 0.5}
    regu_coef, lr = 0.1, 0.05
    solver = solver_for(entries, method="sgd", base_lr=lr, momentum=0.0,
                        regu_coef=regu_coef)
    net = solver.net
    params = net.params.params
    before = net.params.host_arrays()
    gradient_at_current_weights(net)
    g = {k: p.grad.copy() for k, p in params.items()}
    solver.update()
    shape = (lambda w: w) if kind == "L2" else np.sign
    coefficients = {"hidden.weight": 2.0, "hidden.bias": 0.0, "out.weight": 0.0, "out.bias": 0.5}
    for key, c in coefficients.items():
        mult = params[key].spec.lr_mult
        expected = before[key] - lr * mult * (g[key] + regu_coef * c * shape(before[key]))
        np.testing.assert_allclose(params[key].data, expected, rtol=1e-14, atol=1e-16,
                                   err_msg=key)


@pytest.mark.parametrize("kind", ["L2", "L1"])
def test_regularization_loss_is_what_the_gradient_differentiates(kind) -> None:
    entries = copy.deepcopy(NET)
    entries[1]["weight_regu"] = {"type": kind, "coefficient": 2.0}
    solver = solver_for(entries, method="sgd", base_lr=1.0, momentum=0.0, regu_coef=0.3)
    store = solver.net.params
    weight = store.params["hidden.weight"]
    indices = all_indices(weight.shape)
    numeric = central_difference(lambda: store.regularization_loss(0.3), weight.data,
                                 indices)
    before = weight.data.copy()
    store.grad[...] = 0
    solver.update()  # no data gradient, lr 1: the step is the regularization gradient
    step = before - weight.data
    assert_gradient_close(np.array([step[i] for i in indices]), numeric, kind)


def test_l2_norm_constraint_projects_weight_columns_and_the_bias() -> None:
    entries = copy.deepcopy(NET)
    entries[1]["weight_cons"] = {"type": "L2", "threshold": 0.6}
    entries[1]["bias_cons"] = {"type": "L2", "threshold": 0.2, "every_n_iter": 2}
    solver = solver_for(entries, method="sgd", base_lr=1e-9, momentum=0.0)
    params = solver.net.params.params
    weight, bias = params["hidden.weight"], params["hidden.bias"]
    weight.data[:, 0] *= 0.5 / np.linalg.norm(weight.data[:, 0])  # already inside the ball
    weight.data[:, 1] *= 3.0 / np.linalg.norm(weight.data[:, 1])
    bias.data[...] = [0.3, -0.1, 0.0, 0.1]
    columns = weight.data.copy()
    gradient_at_current_weights(solver.net)
    solver.update()  # iteration 1: weights constrained, the bias (every 2nd iteration) not yet
    norms = np.linalg.norm(weight.data, axis=0)
    assert np.all(norms <= 0.6 + 1e-12)
    np.testing.assert_allclose(weight.data[:, 0], columns[:, 0], rtol=1e-6)
    np.testing.assert_allclose(weight.data[:, 1], columns[:, 1] * 0.2, rtol=1e-6)
    assert np.linalg.norm(bias.data) > 0.3
    gradient_at_current_weights(solver.net)
    solver.update()  # iteration 2: the bias vector as a whole is scaled onto norm 0.2
    np.testing.assert_allclose(np.linalg.norm(bias.data), 0.2, rtol=1e-12)
    np.testing.assert_allclose(bias.data / 0.2, np.array([0.3, -0.1, 0, 0.1]) /
                               np.linalg.norm([0.3, -0.1, 0, 0.1]), atol=1e-6)


# -- policies ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "formula"),
    [
        ("fixed", lambda it: 0.1),
        ({"type": "step", "gamma": 0.5, "stepsize": 3}, lambda it: 0.1 * 0.5 ** (it // 3)),
        ({"type": "exp", "gamma": 0.9}, lambda it: 0.1 * 0.9**it),
        ({"type": "inv", "gamma": 0.01, "power": 0.75}, lambda it: 0.1 * (1 + 0.01 * it) ** -0.75),
        ({"type": "staged", "stages": [[4, "fixed"], [9, {"type": "exp", "gamma": 0.5}],
                                       [10**9, {"type": "step", "gamma": 0.1, "stepsize": 2}]]},
         lambda it: 0.1 if it < 4 else 0.1 * 0.5 ** (it - 4) if it < 9
         else 0.1 * 0.1 ** ((it - 9) // 2)),
    ],
    ids=["fixed", "step", "exp", "inv", "staged"],
)
def test_lr_policies_follow_their_formulas(spec, formula) -> None:
    solver = solver_for(method="sgd", base_lr=0.1, lr_policy=spec)
    for it in range(0, 16):
        assert solver.learning_rate(it) == pytest.approx(formula(it), rel=1e-12), it


def test_the_solver_steps_with_the_lr_of_its_iteration() -> None:
    solver = solver_for(method="sgd", base_lr=0.1, momentum=0.0,
                        lr_policy={"type": "step", "gamma": 0.5, "stepsize": 2})
    mult = lr_multipliers(solver.net)
    for iteration in range(1, 5):
        before = solver.net.params.data.copy()
        g = gradient_at_current_weights(solver.net)
        solver.update()
        assert solver.iteration == iteration
        lr = 0.1 * 0.5 ** (iteration // 2)
        np.testing.assert_allclose(solver.net.params.data, before - lr * mult * g, rtol=1e-14,
                                   atol=1e-16)


@pytest.mark.parametrize(
    ("spec", "formula"),
    [
        ("fixed", lambda it: 0.5),
        ({"type": "step", "gamma": 1.5, "stepsize": 2, "max_mom": 0.95},
         lambda it: min(0.5 * 1.5 ** (it // 2), 0.95)),
        ({"type": "linear", "gamma": 0.1, "stepsize": 3, "max_mom": 0.9},
         lambda it: min(0.5 + 0.1 * (it // 3), 0.9)),
    ],
    ids=["fixed", "step", "linear"],
)
def test_momentum_policies_follow_their_formulas(spec, formula) -> None:
    solver = solver_for(method="sgd", base_lr=0.1, momentum=0.5, mom_policy=spec)
    policy = solver.config.mom_policy
    for it in range(0, 20):
        assert policy.momentum(0.5, it) == pytest.approx(formula(it), rel=1e-12), it
    mult = lr_multipliers(solver.net)
    v = np.zeros(solver.net.n_params)
    for iteration in range(1, 5):
        g = gradient_at_current_weights(solver.net)
        solver.update()
        v = formula(iteration) * v - 0.1 * mult * g
        np.testing.assert_allclose(solver.state["velocity"], v, rtol=1e-13, atol=1e-16)


def test_policy_parsing_rejects_bad_specs() -> None:
    for spec, message in [("cosine", "unknown policy 'cosine'"),
                          ({"type": "step", "gamma": "x"}, "gamma: expected a number"),
                          ({"type": "step", "stepsize": 0}, "stepsize: must be a positive"),
                          ({"type": "exp", "rate": 1}, "unknown field 'rate'"),
                          ({"type": "staged"}, "stages: expected a list"),
                          ({"type": "staged", "stages": [[1.5, "fixed"]]}, r"stages\[0\]")]:
        with pytest.raises(ConfigError, match=message):
            parse_lr_policy(spec, "net.yaml: solver.lr_policy")
    with pytest.raises(ConfigError, match="unknown policy 'cyclic'"):
        parse_mom_policy("cyclic", "net.yaml: solver.mom_policy")


def validation_context(tiny_example, solver_fields: dict):
    """What a validation break sees: the real validation net, lounge and solver."""
    config = load_config(str(tiny_example))
    train = Net("train", get_backend("cpu", "float64"), config.layers)
    solver = make_solver(SolverConfig.from_mapping(solver_fields, "test"), train)
    val = Net("val", train.backend, config.validation_layers(), phase="test", params=train.params)

    def unused() -> float:
        raise AssertionError("a validation break needs only the validation net")

    context = BreakContext(net=train, lounge=CoffeeLounge(), log=lambda line: None,
                           solver=solver, snapshot=unused, snapshot_best=unused,
                           take_mean_loss=unused,
                           iters_per_sec=unused, validation_net=lambda: val)
    coffee = ValidationPerformance(every=1, data_layer=config.coffee.validation.data_layer)
    return context, coffee


DECAY = {"base_lr": 0.1, "lr_policy": {"type": "decay_on_validation", "gamma": 0.5}}


def test_decay_on_validation_cuts_the_lr_when_validation_stops_improving(tiny_example) -> None:
    context, coffee = validation_context(tiny_example, DECAY)
    solver, train = context.solver, context.net
    coffee.run(context, 1)  # the first value sets the best
    assert solver.lr_decays == 0 and solver.learning_rate() == 0.1
    coffee.run(context, 2)  # the same value: no improvement
    assert solver.lr_decays == 1 and solver.learning_rate() == 0.05
    train.params.params["out.bias"].data[...] += 1.0  # worse
    coffee.run(context, 3)
    assert solver.lr_decays == 2
    train.params.params["out.bias"].data[...] -= 1.0  # as good as the best: still no gain
    coffee.run(context, 4)
    assert solver.lr_decays == 3
    history = context.lounge.series["validation/loss"]
    history[:] = [(i, 1e9) for i, _ in history]  # pretend every earlier value was awful
    coffee.run(context, 5)  # an improvement: the lr stays
    assert solver.lr_decays == 3
    assert solver.learning_rate(99) == pytest.approx(0.1 * 0.5**3)


def test_lr_cuts_are_solver_state_saved_in_snapshots(tiny_example) -> None:
    context, coffee = validation_context(tiny_example, DECAY)
    for iteration in range(3):
        coffee.run(context, iteration)  # the same loss each time: two cuts
    state = context.solver.state_dict()
    fresh, _ = validation_context(tiny_example, DECAY)  # the config holds no cut
    assert fresh.solver.learning_rate() == 0.1
    fresh.solver.load_state_dict(state)
    assert fresh.solver.lr_decays == 2 and fresh.solver.learning_rate() == 0.025
    older = {k: v for k, v in state.items() if k != "lr_decays"}  # a snapshot from before cuts
    fresh.solver.load_state_dict(older)
    assert fresh.solver.lr_decays == 0


def test_other_policies_ignore_validation(tiny_example) -> None:
    context, coffee = validation_context(tiny_example, {"base_lr": 0.1, "lr_policy": "fixed"})
    for iteration in range(3):
        coffee.run(context, iteration)
    assert context.solver.lr_decays == 0
    # One value per validation, even though tiny.yaml's only loss layer is named "loss".
    assert [i for i, _ in context.lounge.series["validation/loss"]] == [0, 1, 2]
