"""How net files combine and are read: safe YAML loading, `extends` with `set` and
`add_layers`, the overrides of a stage (`set`, `train_only`), and the file paths a net names
(absolute while merging, relative to a run directory in its copy).

This works on raw mappings only; schema.py validates the result into a RunConfig.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import yaml

from mochapy.data_sources import source_scheme
from mochapy.errors import ConfigError
from mochapy.layers import LAYER_TYPES
from mochapy.limits import read_text_bounded


def _layer_entries(raw: dict) -> list[dict]:
    """The layer mappings of a raw YAML net (none when `layers` is malformed: parse_layers
    reports that), for the passes that run before validation: overrides, stages, paths."""
    entries = raw.get("layers")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def stage_net(base: dict, overrides: Any, train_only: Any, where: str) -> dict:
    """A stage's net: `base` with the stage's `set` overrides, and with every layer not listed
    in `train_only` (when given) frozen (its learning rates set to 0)."""
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: 'set' must map dotted names to values")
    if train_only is not None:
        if not isinstance(train_only, list):
            raise ConfigError(f"{where}: train_only must list layer names of the net")
        layer_names = [layer["name"] for layer in _layer_entries(base)
                       if isinstance(layer.get("name"), str)]
        strangers = [n for n in train_only if n not in layer_names]
        if strangers:
            raise ConfigError(f"{where}: train_only names {strangers[0]!r}, which is not a "
                              f"layer of the net; layers: {', '.join(layer_names)}")
        overrides = {**_frozen_lr_overrides(base, set(train_only)), **overrides}
    return apply_overrides(base, overrides, where)


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


def read_net_yaml(path: str, chain: tuple[str, ...] = (), files: list[str] | None = None) -> dict:
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
    merged = read_net_yaml(base_path, (*chain, os.path.abspath(path)), files)
    if not isinstance(merged, dict):
        raise ConfigError(f"{base_path}: the file must hold a mapping")
    absolute_paths(merged, os.path.dirname(os.path.abspath(base_path)))
    overrides = raw.pop("set", {}) or {}
    added = raw.pop("add_layers", []) or []
    if not isinstance(added, list):
        raise ConfigError(f"{path}: 'add_layers' must list layer mappings")
    merged.update(raw)
    if added:
        merged["layers"] = [*(merged.get("layers") or []), *added]
    return apply_overrides(merged, overrides, path)


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


def absolute_paths(raw: dict, base_dir: str) -> None:
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
