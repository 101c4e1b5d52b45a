"""Net: topology errors, automatic gradient accumulation for shared blobs, parameter sharing
between nets, pruning to inputs/outputs, and locating the first non-finite value."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mochapy.backends import CPUBackend
from mochapy.errors import ConfigError, TopologyError
from mochapy.graph import fold_shifts, topological_order
from mochapy.net import Net
from mochapy.neurons import Exponential
from tests.helpers import (
    all_indices,
    assert_gradient_close,
    build_net,
    central_difference,
    make_config,
)

DATA = {"data": {"x": np.random.default_rng(0).normal(size=(6, 3)),
                 "y": np.random.default_rng(1).normal(size=(6, 2))}}
SOURCE = {"type": "MemoryData", "name": "data", "tops": ["x", "y"], "batch_size": 6}


def configs(entries: list[dict]):
    return [make_config(e["type"], **{k: v for k, v in e.items() if k != "type"})
            for e in entries]


def layer(type_name: str, name: str, bottoms=(), tops=(), **fields) -> dict:
    return {"type": type_name, "name": name, "bottoms": list(bottoms), "tops": list(tops),
            **fields}


# -- topology ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entries", "names"),
    [
        ([layer("InnerProduct", "a", ["x"], ["h"], output_dim=2),
          layer("InnerProduct", "b", ["zz"], ["k"], output_dim=2)], ["'b'", "'zz'"]),
        ([layer("InnerProduct", "a", ["x"], ["h"], output_dim=2),
          layer("InnerProduct", "b", ["x"], ["h"], output_dim=2)], ["'a'", "'b'", "'h'"]),
        ([layer("InnerProduct", "a", ["x"], ["h"], output_dim=2),
          layer("InnerProduct", "a", ["h"], ["k"], output_dim=2)], ["'a'"]),
        ([layer("InnerProduct", "a", ["x"], ["x"], output_dim=3)], ["'a'", "'x'"]),
    ],
    ids=["missing-blob", "duplicate-blob", "duplicate-layer", "overwrites-data"],
)
def test_topology_errors_name_the_layer_and_blob(entries, names) -> None:
    with pytest.raises(TopologyError) as info:
        Net("t", CPUBackend("float64"), configs([SOURCE, *entries]), memory_data=DATA)
    message = str(info.value)
    assert all(name in message for name in names), message
    assert "\n" not in message


def test_a_cycle_is_named_by_its_layers_and_blobs() -> None:
    # 'head' only sits downstream of the loop b -> c -> b; the message names the loop itself.
    entries = [SOURCE,
               layer("SquareLoss", "head", ["out", "y"]),
               layer("InnerProduct", "readout", ["p"], ["out"], output_dim=2),
               layer("ElementWise", "b", ["q", "x"], ["p"]),
               layer("ElementWise", "c", ["p", "x"], ["q"])]
    with pytest.raises(TopologyError) as info:
        topological_order(configs(entries))
    message = str(info.value)
    assert message.startswith("cycle:")
    assert "layer 'b' reads blob 'q' from layer 'c'" in message
    assert "layer 'c' reads blob 'p' from layer 'b'" in message
    assert "head" not in message and "readout" not in message


def test_layers_are_sorted_by_blobs_not_file_order() -> None:
    entries = [layer("SquareLoss", "loss", ["pred", "y"]),
               layer("InnerProduct", "out", ["h"], ["pred"], output_dim=2),
               layer("InnerProduct", "hidden", ["x"], ["h"], output_dim=4), SOURCE]
    net = Net("t", CPUBackend("float64"), configs(entries), memory_data=DATA)
    assert [lay.config.name for lay in net.layers] == ["data", "hidden", "out", "loss"]


def test_a_net_without_a_batch_size_says_so() -> None:
    entries = [layer("RandomNormal", "eps", tops=["eps"], output_dims=[2])]
    with pytest.raises(TopologyError, match="batch_size"):
        Net("t", CPUBackend("float64"), configs(entries))


# -- gradient accumulation ---------------------------------------------------------------------
TWO_HEADS = [
    SOURCE,
    layer("InnerProduct", "hidden", ["x"], ["h"], output_dim=4, neuron="Tanh"),
    layer("InnerProduct", "head_a", ["h"], ["pa"], output_dim=2),
    layer("InnerProduct", "head_b", ["h"], ["pb"], output_dim=2, neuron="Sigmoid"),
    layer("SquareLoss", "loss_a", ["pa", "y"]),
    layer("SquareLoss", "loss_b", ["pb", "y"], weight=0.5),
]


def with_split(entries: list[dict]) -> list[dict]:
    """The same net with Mocha's explicit Split layer feeding the two heads."""
    out = copy.deepcopy(entries)
    out.insert(2, layer("Split", "split", ["h"], ["h1", "h2"]))
    out[3]["bottoms"], out[4]["bottoms"] = ["h1"], ["h2"]
    return out


def gradients(entries: list[dict]) -> tuple[float, dict[str, np.ndarray]]:
    net = build_net(entries, DATA, seed=4)
    net.forward()
    net.backward()
    return net.loss(), {k: p.grad.copy() for k, p in net.params.params.items()}


def test_a_blob_read_by_two_layers_gets_the_sum_of_their_gradients() -> None:
    loss, auto = gradients(TWO_HEADS)
    split_loss, split = gradients(with_split(TWO_HEADS))
    assert loss == split_loss
    assert set(auto) == set(split)
    for key in auto:
        np.testing.assert_allclose(auto[key], split[key], rtol=1e-13, atol=1e-15, err_msg=key)
    _, head_a_only = gradients(TWO_HEADS[:3] + TWO_HEADS[4:5])
    assert not np.allclose(auto["hidden.weight"], head_a_only["hidden.weight"])


@pytest.mark.parametrize("entries", [TWO_HEADS, with_split(TWO_HEADS)], ids=["auto", "split"])
def test_shared_blob_gradients_match_finite_differences(entries) -> None:
    net = build_net(entries, DATA, seed=4)

    def objective() -> float:
        net.forward()
        return net.loss()

    objective()
    net.backward()
    for key in ("hidden.weight", "hidden.bias"):
        param = net.params.params[key]
        indices = all_indices(param.shape)
        numeric = central_difference(objective, param.data, indices)
        assert_gradient_close(np.array([param.grad[i] for i in indices]), numeric, key)


def test_a_blob_read_twice_by_one_layer_and_by_a_sink() -> None:
    """h * h (both bottoms one blob) plus a MemoryOutput reading h: d/dh = 2 h dy."""
    entries = [SOURCE,
               layer("InnerProduct", "hidden", ["x"], ["h"], output_dim=2),
               layer("ElementWise", "square", ["h", "h"], ["h2"], operation="Multiply"),
               layer("MemoryOutput", "keep", ["h"]),
               layer("SquareLoss", "loss", ["h2", "y"])]
    net = build_net(entries, DATA, seed=2)

    def objective() -> float:
        net.forward()
        return net.loss()

    objective()
    net.backward()
    param = net.params.params["hidden.weight"]
    indices = all_indices(param.shape)
    numeric = central_difference(objective, param.data, indices)
    assert_gradient_close(np.array([param.grad[i] for i in indices]), numeric, "square")


# -- parameters ---------------------------------------------------------------------------------
def test_train_and_test_nets_share_parameter_arrays_by_key() -> None:
    train = build_net(TWO_HEADS, DATA, seed=4)
    test = build_net(TWO_HEADS, DATA, seed=99, params=train.params, phase="test")
    assert test.params is train.params
    for lay in test.layers:
        for param in lay.params:
            assert param is train.layer(lay.config.name).params[lay.params.index(param)]
            assert np.shares_memory(param.data, train.params.data)
    train.params.params["hidden.bias"].data[...] = 3.0
    np.testing.assert_array_equal(test.layer("hidden").bias.data, 3.0)
    assert all(b.diff is None for b in test.blobs.values()) and test.backward_layers == []


def test_sharing_by_param_key_checks_shapes() -> None:
    train = build_net(TWO_HEADS, DATA)
    wider = copy.deepcopy(TWO_HEADS)
    wider[1]["output_dim"] = 5
    with pytest.raises(ConfigError, match="'hidden.weight' has shape"):
        build_net(wider, DATA, params=train.params)
    renamed = copy.deepcopy(TWO_HEADS)
    renamed[2]["name"] = "head_c"
    with pytest.raises(ConfigError, match="'head_c.weight' is not in the shared store"):
        build_net(renamed, DATA, params=train.params)


def test_one_key_for_two_layers_of_one_net_is_refused() -> None:
    entries = copy.deepcopy(TWO_HEADS)
    entries[2]["param_key"] = entries[3]["param_key"] = "head"
    entries[3]["neuron"] = "Identity"
    with pytest.raises(ConfigError, match="'head_a' and 'head_b' both use parameter 'head.weight'"):
        build_net(entries, DATA)


def test_parameters_are_seeded_by_key() -> None:
    first = build_net(TWO_HEADS, DATA, seed=4).params.host_arrays()
    again = build_net(with_split(TWO_HEADS), DATA, seed=4).params.host_arrays()
    other = build_net(TWO_HEADS, DATA, seed=5).params.host_arrays()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["hidden.weight"], other["hidden.weight"])


# -- shift layers folded into the neuron before them -----------------------------------------------
SD_HEAD = [SOURCE,
           layer("InnerProduct", "mean", ["x"], ["m"], output_dim=2),
           layer("InnerProduct", "sd", ["x"], ["e"], output_dim=2, neuron="Exponential"),
           layer("Power", "floor", ["e"], ["s"], shift=0.001),
           layer("GaussianReconLoss", "recon", ["m", "s", "y"])]


def loss_and_gradients(entries: list[dict], **kwargs) -> tuple[Net, float, dict[str, np.ndarray]]:
    net = build_net(entries, DATA, dtype="float32", seed=3, **kwargs)
    net.params.params["sd.weight"].data[...] = np.linspace(-3, 3, 6).reshape(3, 2)
    net.forward()
    net.backward()
    return net, net.loss(), {k: p.grad.copy() for k, p in net.params.params.items()}


@pytest.mark.usefixtures("cpu_loops")
def test_a_power_that_shifts_an_exponential_is_folded_into_it_with_the_same_numbers() -> None:
    """The floor becomes the neuron's shift and its pass disappears; losses and gradients are
    bit for bit those of the two layers, which run where another layer reads the blob between."""
    net, loss, grads = loss_and_gradients(SD_HEAD)
    assert [lay.config.name for lay in net.layers] == ["data", "mean", "sd", "recon"]
    assert net.layer("sd").config.neuron == Exponential(shift=0.001)
    assert "e" not in net.blobs and net.layer("sd").tops[0].name == "s"
    kept = [*SD_HEAD, layer("MemoryOutput", "keep", ["e"])]
    unfolded, unfolded_loss, unfolded_grads = loss_and_gradients(kept)
    assert "floor" in [lay.config.name for lay in unfolded.layers]
    assert loss == unfolded_loss
    np.testing.assert_array_equal(net.fetch("s"), unfolded.fetch("s"))
    for key, grad in grads.items():
        np.testing.assert_array_equal(grad, unfolded_grads[key], err_msg=key)


@pytest.mark.parametrize(
    ("change", "folded"),
    [({}, True), ({"scale": 2.0}, False), ({"power": 2.0}, False),
     ({"neuron": "ReLU"}, False), ({"neuron": {"type": "Exponential", "shift": 0.5}}, False)],
    ids=["shift", "scale", "power", "not-exponential", "already-shifted"],
)
def test_only_a_pure_shift_of_an_unshifted_exponential_is_folded(change, folded) -> None:
    entries = copy.deepcopy(SD_HEAD)
    entries[2 if "neuron" in change else 3].update(change)
    names = [cfg.name for cfg in fold_shifts(configs(entries))]
    assert ("floor" not in names) == folded


def test_a_shift_is_not_folded_where_the_blob_before_it_is_asked_for() -> None:
    assert "floor" in [cfg.name for cfg in fold_shifts(configs(SD_HEAD), keep=["e"])]
    net = build_net(SD_HEAD, DATA, phase="test", outputs=["e", "s"])
    net.forward()
    np.testing.assert_allclose(net.fetch("s"), net.fetch("e") + 0.001, rtol=1e-15)


# -- inputs, outputs, describe, non-finite ------------------------------------------------------
def test_a_decoder_net_pruned_to_inputs_and_outputs(small_vae) -> None:
    vae = small_vae()
    decoder = Net("decoder", vae.backend, vae.configs, params=vae.params, phase="test",
                  batch_size=3, inputs={"z": (8,)}, outputs=["x_mu"])
    assert [lay.config.name for lay in decoder.layers] == ["dec1", "dec2", "x_mu"]
    z = np.random.default_rng(0).normal(size=(3, 8))
    decoder.set_input("z", z)
    decoder.forward()
    p = {k: v.data for k, v in vae.params.params.items()}
    h = np.maximum(z @ p["dec1.weight"] + p["dec1.bias"], 0)
    h = np.maximum(h @ p["dec2.weight"] + p["dec2.bias"], 0)
    np.testing.assert_allclose(decoder.fetch("x_mu"), h @ p["x_mu.weight"] + p["x_mu.bias"],
                               rtol=1e-12)


def test_describe_lists_layers_shapes_and_counts() -> None:
    net = build_net(TWO_HEADS, DATA)
    rows = {row[0]: row for row in net.describe()}
    assert rows["hidden"] == ("hidden", "InnerProduct", "h[6, 4]", 16)
    assert rows["loss_a"][2:] == ("-", 0)
    assert net.n_params == 16 + 10 + 10


def test_first_nonfinite_names_the_layer() -> None:
    net = build_net(TWO_HEADS, DATA)
    net.forward()
    net.backward()
    assert net.first_nonfinite() is None and net.gradients_finite()
    with np.errstate(invalid="ignore", over="ignore"):
        net.params.params["head_a.weight"].data[0, 0] = np.inf
        net.forward()
        assert net.first_nonfinite() == "layer 'head_a' (blob 'pa')"
        # head_b's Sigmoid saturates: its forward stays finite, its backward makes 0 * inf.
        net.params.params["head_a.weight"].data[0, 0] = 0.0
        net.params.params["head_b.weight"].data[0, 0] = np.inf
        net.forward()
        net.backward()
    assert np.isfinite(net.loss())
    assert net.first_nonfinite() == "layer 'head_b' (gradient into blob 'h')"
    assert not net.gradients_finite()
