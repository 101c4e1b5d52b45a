"""The schema of a YAML net: a loaded mapping validated into a RunConfig (layers, solver,
coffee breaks, run settings, stages).

Field names follow Mocha/Caffe where they exist. Every problem is reported as one line naming the
file, the layer and the field. How files combine (extends/set/add_layers) is inheritance.py's.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from mochapy.coffee import CoffeeConfig, parse_coffee
from mochapy.config.inheritance import stage_net
from mochapy.errors import ConfigError, TopologyError, require_int
from mochapy.graph import topological_order
from mochapy.layers import LAYER_TYPES, LayerConfig
from mochapy.solvers import SolverConfig

TOP_LEVEL = (
    "name", "seed", "backend", "dtype", "layers", "solver", "coffee_breaks", "roles", "report",
    "description", "init_from", "init_from_partial", "extends", "set", "add_layers", "stages",
)
STAGE_FIELDS = ("name", "set", "train_only")


@dataclass
class RunConfig:
    """A parsed YAML net: everything `mochapy run` needs."""

    name: str
    path: str
    text: str
    layers: list[LayerConfig]
    solver: SolverConfig
    coffee: CoffeeConfig
    seed: int = 0
    backend: str = "cpu"
    dtype: str = "float32"
    roles: dict[str, str] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    init_from: str | None = None  # a run directory or weights/snapshot .h5 to start from
    # Parameters that init_from lacks keep their initial values (a layer added to a trained net)
    # instead of failing the run: Mocha's load_network with die_if_not_found = false.
    init_from_partial: bool = False
    stages: list[Stage] = field(default_factory=list)  # empty: one plain run
    # the net file and every file it extends: inputs a run must never write over
    files: tuple[str, ...] = ()

    def validation_layers(self) -> list[LayerConfig]:
        """The train layers with the data layer reading the validation source, unshuffled."""
        val = self.coffee.validation
        if val is None:
            raise ConfigError(f"{self.path}: no validation coffee break is declared")
        return [
            dataclasses.replace(
                cfg, source=val.source, shuffle=False,
                batch_size=val.batch_size or cfg.batch_size, limit=0,
            ) if cfg.name == val.data_layer else cfg
            for cfg in self.layers
        ]


@dataclass
class Stage:
    """One stage of a staged run: the whole net, trained with its own overrides in turn."""

    name: str
    config: RunConfig


def parse_layers(entries: Any, where: str, base_dir: str) -> list[LayerConfig]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: 'layers' must be a non-empty list")
    layers = []
    for index, entry in enumerate(entries):
        label = f"{where}: layers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{label}: expected a mapping with 'type' and 'name'")
        kind = entry.get("type")
        if not isinstance(kind, str) or kind not in LAYER_TYPES:
            raise ConfigError(
                f"{label}: unknown layer type {kind!r}; known: {', '.join(sorted(LAYER_TYPES))}"
            )
        cls = LAYER_TYPES[kind]
        name = entry.get("name")
        if isinstance(name, str) and name and not safe_file_name(name):
            raise ConfigError(f"{label}: layer name {name!r} must not contain '/' or be '.' or "
                              "'..' (it names groups in the run's snapshot files)")
        fields = dict(entry)
        if "base_dir" in {f.name for f in dataclasses.fields(cls)}:
            if "base_dir" in fields:
                raise ConfigError(f"{label}: 'base_dir' is set from the YAML file's location")
            fields["base_dir"] = base_dir
        layers.append(cls.from_mapping(fields, where))
    return layers


def parse_config(raw: Any, path: str, text: str = "") -> RunConfig:
    """Validate a loaded YAML mapping into a RunConfig (layers sorted, topology checked).

    With `stages`, the result is the last stage's config holding every stage in `.stages`.
    """
    where = path
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the file must hold a mapping with 'layers' and 'solver'")
    if raw.get("stages") is not None:
        return _parse_stages(raw, path)
    unknown = set(raw) - set(TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"{where}: unknown top-level field {sorted(unknown, key=str)[0]!r}; "
            f"known: {', '.join(TOP_LEVEL)}"
        )
    base_dir = os.path.dirname(os.path.abspath(path))
    layers = parse_layers(raw.get("layers"), where, base_dir)
    try:
        topological_order(layers)
    except TopologyError as exc:
        raise TopologyError(f"{where}: {exc}") from None
    name = raw.get("name", os.path.splitext(os.path.basename(path))[0])
    if not safe_file_name(name):
        raise ConfigError(f"{where}: 'name' must be a non-empty string without '/', and not "
                          f"'.' or '..' (it names the run's folder), got {name!r}")
    backend = raw.get("backend", "cpu")
    if backend not in ("cpu", "gpu", "auto"):
        raise ConfigError(f"{where}: 'backend' must be cpu, gpu or auto, got {backend!r}")
    dtype = raw.get("dtype", "float32")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"{where}: 'dtype' must be float32 or float64, got {dtype!r}")
    roles = raw.get("roles", {}) or {}
    blobs = {b for c in layers for b in c.tops}
    if not isinstance(roles, dict) or not all(isinstance(v, str) for v in roles.values()):
        raise ConfigError(f"{where}: 'roles' must map role names to blob names")
    for role, blob in roles.items():
        if blob not in blobs:
            raise ConfigError(f"{where}: roles.{role}: no layer produces blob {blob!r}")
    report = raw.get("report", []) or []
    if isinstance(report, str):
        report = [report]
    if not isinstance(report, list) or not all(isinstance(r, str) for r in report):
        raise ConfigError(f"{where}: 'report' must be a name or a list of names")
    init_from = raw.get("init_from")
    if init_from is not None:
        if not isinstance(init_from, str) or not init_from:
            raise ConfigError(f"{where}: 'init_from' must name a run directory or weights file")
        init_from = os.path.join(base_dir, init_from)
    init_from_partial = raw.get("init_from_partial", False)
    if not isinstance(init_from_partial, bool):
        raise ConfigError(f"{where}: 'init_from_partial' must be true or false")
    return RunConfig(
        name=name,
        path=path,
        text=text,
        layers=layers,
        solver=SolverConfig.from_mapping(raw.get("solver", {}), f"{where}: solver"),
        coffee=parse_coffee(raw.get("coffee_breaks"), where, layers),
        seed=require_int(raw.get("seed", 0), f"{where}: seed"),
        backend=backend,
        dtype=dtype,
        roles=roles,
        report=report,
        init_from=init_from,
        init_from_partial=init_from_partial,
    )


def _parse_stages(raw: dict, path: str) -> RunConfig:
    """Each stage is the net with its `set` overrides; `train_only` freezes every other layer."""
    entries = raw["stages"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'stages' must be a non-empty list")
    base = {k: v for k, v in raw.items() if k != "stages"}
    stages, names = [], set()
    for index, entry in enumerate(entries):
        where = f"{path}: stages[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: expected a mapping with a 'name'")
        unknown = set(entry) - set(STAGE_FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field {sorted(unknown, key=str)[0]!r}; "
                              f"known: {', '.join(STAGE_FIELDS)}")
        name = entry["name"]
        if name in names or not safe_file_name(name):
            raise ConfigError(f"{where}: stage names must be unique, non-empty, without '/', "
                              "and not '.' or '..'")
        names.add(name)
        stage_raw = stage_net(base, entry.get("set"), entry.get("train_only"), where)
        config = parse_config(stage_raw, path, yaml.safe_dump(stage_raw, sort_keys=False))
        stages.append(Stage(name, config))
    final = dataclasses.replace(stages[-1].config, stages=stages)
    return final


def safe_file_name(name: object) -> bool:
    """True for a name that can become one path component inside a run's folder."""
    return (isinstance(name, str) and bool(name) and name not in (".", "..")
            and "/" not in name and "\\" not in name and "\0" not in name)


