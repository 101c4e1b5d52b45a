"""The net drives behaviour from the layer traits: sinks take no tops and are the layers it
closes and discards; has_loss layers are what it sums; no trait is declared that nothing reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mochapy.backends import CPUBackend
from mochapy.errors import ConfigError
from mochapy.layers import LAYER_TYPES, LayerConfig
from mochapy.net import Net
from tests.helpers import make_config

DATA = {"data": {"x": np.arange(12.0).reshape(4, 3), "y": np.ones((4, 3))}}


def small_net(tmp_path: Path) -> Net:
    return Net("t", CPUBackend("float64"), [
        make_config("MemoryData", name="data", tops=["x", "y"], batch_size=4),
        make_config("SquareLoss", name="loss", bottoms=["x", "y"]),
        make_config("HDF5Output", name="save", bottoms=["x"], filename="out.h5",
                    base_dir=str(tmp_path)),
        make_config("MemoryOutput", name="keep", bottoms=["y"]),
    ], memory_data=DATA)


@pytest.mark.parametrize("type_name", sorted(t for t, c in LAYER_TYPES.items() if c.is_sink))
def test_a_sink_takes_no_tops(type_name: str) -> None:
    wanted = LAYER_TYPES[type_name].n_bottoms
    bottoms = [f"b{i}" for i in range(wanted if isinstance(wanted, int) else wanted[0])]
    extra = {"filename": "f.h5"} if type_name == "HDF5Output" else {}
    with pytest.raises(ConfigError, match="needs exactly 0 tops"):
        make_config(type_name, name="s", bottoms=bottoms, tops=["extra"], **extra)


@pytest.mark.parametrize("config_class", [c for c in LAYER_TYPES.values()
                                          if "neuron" in {f.name for f in dataclasses.fields(c)}],
                         ids=lambda c: c.type_name)
def test_a_layer_with_a_neuron_has_one_top(config_class: type[LayerConfig]) -> None:
    """graph.fold_shifts moves a shift into a layer's neuron: the neuron must make its one top."""
    assert config_class.n_tops == 1 and not config_class.is_sink


def test_the_sinks_are_what_the_net_closes_and_discards(tmp_path: Path) -> None:
    net = small_net(tmp_path)
    assert [layer.config.name for layer in net.sinks] == ["loss", "save", "keep"]
    assert [layer.config.name for layer in net.loss_layers] == ["loss"]
    net.forward()
    net.discard_outputs()  # a failed run: the output file's rows are dropped, nothing is left
    assert list(tmp_path.iterdir()) == []
    net.forward()
    net.close()
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_every_declared_trait_is_one_the_engine_reads() -> None:
    read = {"is_source", "is_sink", "has_param", "can_do_bp", "has_loss"}
    traits = {name for name, value in vars(LayerConfig).items()
              if isinstance(value, bool) and name not in {f.name for f in
                                                          dataclasses.fields(LayerConfig)}}
    assert traits == read
