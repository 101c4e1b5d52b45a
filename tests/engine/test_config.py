"""YAML nets: every mistake is one ConfigError line naming the file, the layer and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mochapy.config import load_config
from mochapy.errors import ConfigError, MochaError, TopologyError
from mochapy.graph import topological_order
from mochapy.neurons import ReLU
from tests.helpers import EXAMPLES

GOOD = {
    "name": "net",
    "layers": [
        {"type": "HDF5Data", "name": "data", "source": "train.h5", "batch_size": 4,
         "tops": ["x", "y"]},
        {"type": "InnerProduct", "name": "hidden", "bottoms": ["x"], "tops": ["h"],
         "output_dim": 3, "neuron": {"type": "ReLU", "epsilon": 0.01}},
        {"type": "InnerProduct", "name": "out", "bottoms": ["h"], "tops": ["pred"],
         "output_dim": 1},
        {"type": "SquareLoss", "name": "loss", "bottoms": ["pred", "y"]},
    ],
    "solver": {"method": "sgd", "base_lr": 0.1, "max_iter": 10,
               "lr_policy": {"type": "step", "gamma": 0.5, "stepsize": 5}},
    "coffee_breaks": {"snapshot": {"every": 5, "keep": 2},
                      "validation": {"every": 5, "source": "test.h5"}},
}


def write(tmp_path: Path, raw: object, name: str = "net.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def edited(layer: str | None = None, **changes) -> dict:
    """GOOD with top-level changes, or field changes in one layer (None value: delete)."""
    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    target = next(e for e in raw["layers"] if e["name"] == layer) if layer else raw
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return raw


def test_a_good_file_parses(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, GOOD)))
    assert [c.name for c in config.layers] == ["data", "hidden", "out", "loss"]
    assert config.layers[1].neuron == ReLU(0.01) and config.layers[1].output_dim == 3
    assert config.layers[0].tops == ("x", "y")
    assert config.solver.method == "sgd" and config.solver.lr_policy.stepsize == 5
    assert config.coffee.keep_snapshots == 2 and config.coffee.validation.data_layer == "data"


@pytest.mark.parametrize(
    "example", ["tiny.yaml", "galaxy_vae_poster.yaml", "galaxy_vae.yaml", "galaxy_vae_full.yaml"]
)
def test_the_examples_parse(example) -> None:
    config = load_config(str(EXAMPLES / example))
    assert config.layers and config.solver.max_iter > 0


@pytest.mark.parametrize(("experiment", "latent_dim", "mean_sds"), [
    ("galaxy_vae_z32.yaml", 32, {0.0}),
    ("galaxy_vae_z32_joint.yaml", 32, {0.02}),
    ("galaxy_vae_z32_rejoint.yaml", 32, {0.02}),
    ("galaxy_vae_z32_noise.yaml", 32, {0.02}),
    ("galaxy_vae_z32_roughness.yaml", 32, {0.02, 0.04}),
    ("galaxy_vae_z32_wide_decoder.yaml", 32, {0.02}),
    ("galaxy_vae_z32_wide_encoder.yaml", 32, {0.02}),
    ("galaxy_vae_z32_wide.yaml", 32, {0.04}),
    ("galaxy_vae_z32_contrast.yaml", 32, {0.0}),  # the mean is not trained: no mean_sd
    ("galaxy_vae_gz_z32.yaml", 32, {0.02}),
    ("galaxy_vae_gz_z32_contrast.yaml", 32, {0.0}),
])
def test_the_experiment_nets_parse(experiment, latent_dim, mean_sds) -> None:
    """Each stage of the experiments' staged nets, with what sets it apart from the poster's."""
    config = load_config(str(EXAMPLES.parent / "experiments" / experiment))
    used = set()
    for stage in config.stages:
        layers = {c.name: c for c in stage.config.layers}
        assert layers["z_mu"].output_dim == layers["z_sigma"].output_dim == latent_dim
        if "noise_level" in layers:  # image statistics added to g_mu(x) by linear maps
            assert layers["z_mu"].tops in {("z_mu_mlp",), ("z_mu_main",)}
            assert stage.config.init_from_partial
            statistics = {c.tops[0] for c in layers.values() if c.type_name == "NoiseLevel"}
            maps = [layers[f"z_mu_{name}"] for name in ("noise", "rough")
                    if f"z_mu_{name}" in layers]
            assert {m.bottoms[0] for m in maps} <= statistics
            assert all(m.output_dim == latent_dim for m in maps)
            (made_by,) = [c for c in layers.values() if "z_mu" in c.tops]
            assert made_by.type_name == "Concat" or made_by.operation == "Add"
        if not stage.name.rstrip("0123456789").endswith("sd"):  # sd stages: the sd head alone
            used.add(layers["recon"].mean_sd)
    assert used == mean_sds


@pytest.mark.parametrize("experiment", ["galaxy_vae_z32_contrast.yaml",
                                        "galaxy_vae_gz_z32_contrast.yaml"])
def test_the_contrast_experiment_gives_its_statistics_latents_to_the_sd_alone(
        experiment: str) -> None:
    """z = (g_mu(x), 4 statistics): the mean reads z[0:32], the contrast head all of z, and only
    the new layers train, starting from the trained net exactly (the head's last layer at 0)."""
    experiments = EXAMPLES.parent / "experiments"
    config = load_config(str(experiments / experiment))
    (stage,) = config.stages
    layers = {c.name: c for c in stage.config.layers}
    lags = sorted(c.lag for c in layers.values() if c.type_name == "NoiseLevel")
    assert lags == [1, 1, 2, 3] and layers["image_stats"].type_name == "Concat"
    assert layers["z_mu_all"].bottoms == ("z_mu_main", "z_mu_stats")
    assert layers["z_sigma_all"].bottoms == ("z_sigma_main", "z_sigma_stats")
    assert layers["eps"].output_dims == (32 + layers["z_mu_stats"].output_dim,) == (36,)
    assert layers["z_parts"].slice_point == (32,)
    assert all(layers[name].bottoms == ("z_main",) for name in ("dec1", "dec1b") if name in layers)
    assert layers["contrast1"].bottoms == ("z",)
    assert layers["contrast"].weight_init.value == layers["contrast"].bias_init.value == 0
    assert layers["x_sigma_contrast"].bottoms == ("x_log_sd", "contrast_ab")
    assert layers["x_sigma_floor"].bottoms == layers["x_sigma_contrast"].tops
    frozen = {name for name, c in layers.items() if getattr(c, "weight_lr", 1) == 0}
    trained = {name for name, c in layers.items() if c.has_param} - frozen
    assert trained == {"contrast1", "contrast", "z_mu_stats", "z_sigma_stats"}


def test_add_layers_extend_the_base_and_set_can_rewire_it(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "base.yaml")
    child = write(tmp_path, {
        "extends": "base.yaml",
        "add_layers": [
            {"type": "InnerProduct", "name": "side", "bottoms": ["x"], "tops": ["side"],
             "output_dim": 1},
            {"type": "ElementWise", "name": "total", "bottoms": ["main", "side"],
             "tops": ["pred"]},
        ],
        "set": {"out.tops": ["main"]},
        "init_from_partial": True,
    })
    config = load_config(str(child))
    names = [c.name for c in topological_order(config.layers)]
    assert set(names) == {"data", "hidden", "out", "side", "total", "loss"}
    assert names.index("total") < names.index("loss")  # sorted into the graph
    assert config.init_from_partial


@pytest.mark.parametrize(("raw", "fragment"), [
    ({**GOOD, "add_layers": []}, "'add_layers' needs 'extends'"),
    ({"extends": "base.yaml", "add_layers": {"name": "x"}}, "'add_layers' must list"),
    ({"extends": "base.yaml", "init_from_partial": "yes"}, "'init_from_partial' must be true"),
])
def test_add_layers_and_init_from_partial_mistakes(raw, fragment, tmp_path: Path) -> None:
    write(tmp_path, GOOD, "base.yaml")
    with pytest.raises(ConfigError, match=fragment):
        load_config(str(write(tmp_path, raw)))


CASES = [
    # (raw, exception, fragments the one line must contain)
    (edited(layers=GOOD["layers"] + [{"type": "Convolution", "name": "conv"}]), ConfigError,
     ["layers[4]", "unknown layer type 'Convolution'"]),
    (edited("hidden", outputdim=3), ConfigError,
     ["'hidden'", "unknown field 'outputdim'", "output_dim"]),
    (edited("hidden", output_dim="many"), ConfigError,
     ["'hidden'", "'output_dim'", "must be an integer"]),
    (edited("hidden", output_dim=2.5), ConfigError, ["'hidden'", "'output_dim'", "integer"]),
    (edited("hidden", output_dim=True), ConfigError, ["'hidden'", "'output_dim'", "integer"]),
    (edited("data", shuffle="yes"), ConfigError, ["'data'", "'shuffle'", "true or false"]),
    (edited("data", batch_size=None), ConfigError, ["'data'", "'batch_size'", "positive"]),
    (edited("data", source=None), ConfigError, ["'data'", "'source'"]),
    (edited("hidden", output_dim=None), ConfigError, ["'hidden'", "'output_dim'", "positive"]),
    (edited("hidden", neuron="Softplus"), ConfigError, ["'hidden'", "unknown neuron 'Softplus'"]),
    (edited("hidden", weight_init={"type": "Zeros"}), ConfigError,
     ["'hidden'", "'weight_init'", "unknown type 'Zeros'"]),
    (edited("hidden", weight_regu={"type": "L2", "coef": 1}), ConfigError,
     ["'hidden'", "'weight_regu'", "unknown field 'coef'"]),
    (edited("hidden", weight_cons={"type": "L2", "threshold": "big"}), ConfigError,
     ["'hidden'", "threshold", "expected a number"]),
    (edited("loss", bottoms=["pred"]), ConfigError, ["'loss'", "exactly 2 bottoms"]),
    (edited("hidden", name=None), ConfigError, ["non-empty string 'name'"]),
    (edited("data", base_dir="/elsewhere"), ConfigError, ["'base_dir'"]),
    (edited(solver={"method": "rmsprop"}), ConfigError, ["solver.method", "'rmsprop'"]),
    (edited(solver={"base_lr": 0.1, "learning_rate": 1}), ConfigError,
     ["solver", "unknown field 'learning_rate'"]),
    (edited(solver={"base_lr": "fast"}), ConfigError, ["solver.base_lr", "'fast'"]),
    (edited(solver={"base_lr": -1}), ConfigError, ["solver", "base_lr must be > 0"]),
    (edited(solver={"max_iter": 2.5}), ConfigError, ["solver.max_iter"]),
    (edited(solver={"beta1": 1.0}), ConfigError, ["solver", "beta1"]),
    (edited(solver={"lr_policy": {"type": "cosine"}}), ConfigError,
     ["solver.lr_policy", "'cosine'"]),
    (edited(solver=[1, 2]), ConfigError, ["'solver' must be a mapping"]),
    (edited(optimizer={}), ConfigError, ["unknown top-level field 'optimizer'"]),
    (edited(dtype="float16"), ConfigError, ["'dtype'", "float16"]),
    (edited(backend="tpu"), ConfigError, ["'backend'", "tpu"]),
    (edited(seed=-1), ConfigError, ["seed"]),
    (edited(roles={"input": "nosuchblob"}), ConfigError, ["roles.input", "'nosuchblob'"]),
    (edited(coffee_breaks={"tea": {"every": 1}}), ConfigError, ["unknown break 'tea'"]),
    (edited(coffee_breaks={"snapshot": {"every": 0}}), ConfigError, ["snapshot.every"]),
    (edited(coffee_breaks={"validation": {"every": 2, "source": "t.h5", "data_layer": "hidden"}}),
     ConfigError, ["validation.data_layer", "'hidden'"]),
    (edited(layers=[]), ConfigError, ["'layers' must be a non-empty list"]),
    ([1, 2, 3], ConfigError, ["must hold a mapping"]),
    (edited("out", bottoms=["missing"]), TopologyError, ["'out'", "'missing'"]),
    (edited("out", tops=["h"]), TopologyError, ["'hidden'", "'out'", "'h'"]),
]


@pytest.mark.parametrize(("raw", "exception", "fragments"), CASES,
                         ids=[f"{i}-{c[2][-1][:24]}" for i, c in enumerate(CASES)])
def test_mistakes_are_one_line_naming_file_layer_and_field(
    raw, exception, fragments, tmp_path: Path
) -> None:
    path = write(tmp_path, raw)
    with pytest.raises(exception) as info:
        load_config(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(
    ("text", "where"),
    [("layers: [\n  {type: HDF5Data, name: data\n", "line 3"),
     ("name: x\nlayers:\n  - type: Split\n   name: s\n", "line 4"),
     ("name: 'unterminated\n", "end of stream at line 2")],
)
def test_yaml_syntax_errors_name_the_line(text, where, tmp_path: Path) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert message.startswith(str(path)) and where in message and "\n" not in message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "absent.yaml"))


def test_every_config_error_is_a_mocha_error() -> None:
    assert issubclass(ConfigError, MochaError) and issubclass(TopologyError, MochaError)
