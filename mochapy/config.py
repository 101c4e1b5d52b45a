"""YAML nets: one file declares the layers, the solver, the coffee breaks and run settings.

Field names follow Mocha/Caffe where they exist. Every problem is reported as one line naming the
file, the layer and the field.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from mochapy.coffee import CoffeeConfig, parse_coffee
from mochapy.data_sources import source_scheme
from mochapy.errors import ConfigError, TopologyError, require_int
from mochapy.graph import topological_order
from mochapy.layers import LAYER_TYPES, LayerConfig
from mochapy.limits import read_text_bounded
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


def _layer_entries(raw: dict) -> list[dict]:
    """The layer mappings of a raw YAML net (none when `layers` is malformed: parse_layers
    reports that), for the passes that run before validation: overrides, stages, paths."""
    entries = raw.get("layers")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


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
    layer_names = [layer["name"] for layer in _layer_entries(base)
                   if isinstance(layer.get("name"), str)]
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
        overrides = entry.get("set") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}: 'set' must map dotted names to values")
        train_only = entry.get("train_only")
        if train_only is not None:
            if not isinstance(train_only, list):
                raise ConfigError(f"{where}: train_only must list layer names of the net")
            strangers = [n for n in train_only if n not in layer_names]
            if strangers:
                raise ConfigError(f"{where}: train_only names {strangers[0]!r}, which is not a "
                                  f"layer of the net; layers: {', '.join(layer_names)}")
            frozen = _frozen_lr_overrides(base, set(train_only))
            overrides = {**frozen, **overrides}
        stage_raw = apply_overrides(base, overrides, where)
        config = parse_config(stage_raw, path, yaml.safe_dump(stage_raw, sort_keys=False))
        stages.append(Stage(name, config))
    final = dataclasses.replace(stages[-1].config, stages=stages)
    return final


def _frozen_lr_overrides(raw: dict, trainable: set[str]) -> dict:
    """`layer.weight_lr: 0` and `layer.bias_lr: 0` for every layer with parameters not listed."""
    overrides = {}
    for layer in _layer_entries(raw):
        kind = layer.get("type")
        cls = LAYER_TYPES.get(kind) if isinstance(kind, str) else None
        name = layer.get("name")
        if cls is None or not cls.has_param or not isinstance(name, str) or name in trainable:
            continue
        for f in dataclasses.fields(cls):
            if f.name.endswith("_lr"):
                overrides[f"{name}.{f.name}"] = 0.0
    return overrides


def apply_overrides(raw: dict, overrides: dict, where: str) -> dict:
    """A copy of a YAML mapping with `layer.field`, `solver.field`, `coffee_breaks.name.field`
    or top-level values replaced: how one net file derives from another (`extends` + `set`)."""
    net = copy.deepcopy(raw)
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: 'set' must map dotted names to values")
    layers = {layer["name"]: layer for layer in _layer_entries(net)
              if isinstance(layer.get("name"), str)}
    for key, value in overrides.items():
        head, _, rest = str(key).partition(".")
        if not rest:
            net[head] = value
        elif head in layers:
            layers[head][rest] = value
        elif head in ("solver", "coffee_breaks") and not isinstance(net.get(head) or {}, dict):
            raise ConfigError(f"{where}: set {key!r}: {head!r} is not a mapping")
        elif head == "solver":
            net["solver"] = {**(net.get("solver") or {}), rest: value}
        elif head == "coffee_breaks":
            name, _, field_name = rest.partition(".")
            breaks = net["coffee_breaks"] = dict(net.get("coffee_breaks") or {})
            if not field_name:
                breaks[name] = value  # a whole break: a mapping, or null to drop it
            elif isinstance(breaks.get(name) or {}, dict):
                breaks[name] = {**(breaks.get(name) or {}), field_name: value}
            else:
                raise ConfigError(f"{where}: set {key!r}: expected coffee_breaks.NAME.FIELD")
        else:
            raise ConfigError(f"{where}: set {key!r}: no layer or section named {head!r}")
    return net


def safe_file_name(name: object) -> bool:
    """True for a name that can become one path component inside a run's folder."""
    return (isinstance(name, str) and bool(name) and name not in (".", "..")
            and "/" not in name and "\\" not in name and "\0" not in name)


MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 200_000  # counting every use of an anchor: no "billion laughs"


class _NetLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (YAML keeps the last
    silently, so a second `base_lr:` would hide the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: keys given beside it override it, as YAML says
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{self.name}: key {key!r} given twice in one mapping (lines "
                                  f"{seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _check_node_graph(root: yaml.Node, path: str) -> None:
    """Refuse documents nested deeper than MAX_YAML_DEPTH, an anchor that contains itself, or
    more than MAX_YAML_NODES nodes once every alias is expanded, before building anything."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{path}: nested more than {MAX_YAML_DEPTH} levels deep")
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            line = node.start_mark.line + 1
            raise ConfigError(f"{path}: the anchor at line {line} refers to itself")
        open_nodes.add(id(node))
        children = (node.value if isinstance(node, yaml.SequenceNode) else
                    [n for pair in node.value for n in pair]
                    if isinstance(node, yaml.MappingNode) else [])
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{path}: more than {MAX_YAML_NODES:,} values once its aliases "
                              "are expanded")
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, 0)


def parse_yaml(text: str, path: str) -> Any:
    """Load one YAML document safely: no duplicate keys, bounded depth and size, no alias that
    contains itself (yaml.YAMLError for a syntax error, ConfigError for the rest)."""
    loader = _NetLoader(text)
    loader.name = path
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node_graph(node, path)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read") from None
    finally:
        loader.dispose()


def _read_yaml(path: str, chain: tuple[str, ...] = (), files: list[str] | None = None) -> dict:
    """Load a YAML file, resolving `extends: base.yaml` (relative to the file) and `set:`;
    `files` collects every file read."""
    if files is not None:
        files.append(path)
    try:
        text = read_text_bounded(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        raw = parse_yaml(text, path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem}{at}") from None
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw
    base = raw.pop("extends")
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'extends' must name another YAML file")
    base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base)
    if os.path.abspath(base_path) in chain:
        raise ConfigError(f"{path}: 'extends' loops back to {base}")
    merged = _read_yaml(base_path, (*chain, os.path.abspath(path)), files)
    if not isinstance(merged, dict):
        raise ConfigError(f"{base_path}: the file must hold a mapping")
    _absolute_paths(merged, os.path.dirname(os.path.abspath(base_path)))
    overrides = raw.pop("set", {}) or {}
    added = raw.pop("add_layers", []) or []
    if not isinstance(added, list):
        raise ConfigError(f"{path}: 'add_layers' must list layer mappings")
    merged.update(raw)
    if added:
        merged["layers"] = [*(merged.get("layers") or []), *added]
    return apply_overrides(merged, overrides, path)


def load_config(path: str) -> RunConfig:
    """Read and validate a YAML net file (following `extends`)."""
    files: list[str] = []
    raw = _read_yaml(path, files=files)
    for key in ("set", "add_layers"):
        if isinstance(raw, dict) and key in raw:
            raise ConfigError(f"{path}: '{key}' needs 'extends'")
    text = ""
    if isinstance(raw, dict):
        _absolute_paths(raw, os.path.dirname(os.path.abspath(path)))
        text = yaml.safe_dump(raw, sort_keys=False)
    config = parse_config(raw, path, text)
    return dataclasses.replace(config, files=tuple(files),
                               stages=[dataclasses.replace(stage, config=dataclasses.replace(
                                   stage.config, files=tuple(files))) for stage in config.stages])


def _map_paths(raw: dict, change: Callable[[str], str]) -> None:
    """Apply `change` to every file path the net names (data sources and init_from)."""

    def mapped(value: object) -> object:
        return value if not isinstance(value, str) or source_scheme(value) else change(value)

    for layer in _layer_entries(raw):
        if "source" in layer:
            layer["source"] = mapped(layer["source"])
        if layer.get("type") == "HDF5Output" and "filename" in layer:
            layer["filename"] = mapped(layer["filename"])
    breaks = raw.get("coffee_breaks")
    validation = breaks.get("validation") if isinstance(breaks, dict) else None
    if isinstance(validation, dict) and "source" in validation:
        validation["source"] = mapped(validation["source"])
    if "init_from" in raw:
        raw["init_from"] = mapped(raw["init_from"])


def _absolute_paths(raw: dict, base_dir: str) -> None:
    """Make file paths absolute while reading, so every path means the same after merging."""
    _map_paths(raw, lambda path: os.path.normpath(os.path.join(base_dir, path)))


def text_for_directory(text: str, directory: str) -> str:
    """The net's YAML with file paths relative to `directory`, where its copy is written.

    A run directory's net.yaml then reads back from there, and still does after the run directory
    and what it names move together (a shipped run cloned to another machine).
    """
    raw = yaml.safe_load(text) if text else None
    if not isinstance(raw, dict):
        return text
    _map_paths(raw, lambda path: os.path.relpath(path, os.path.abspath(directory)))
    return yaml.safe_dump(raw, sort_keys=False)
