"""Property-based fuzzing of the YAML loader: whatever a user writes, `parse_config` and
`load_config` either return a RunConfig or raise a MochaError (one line) - never a TypeError,
KeyError, ValueError or any other exception that would end in a traceback."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mochapy.config import RunConfig, load_config, parse_config
from mochapy.errors import MochaError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASES = {name: yaml.safe_load((EXAMPLES / name).read_text())
         for name in ("tiny.yaml", "galaxy_vae_poster.yaml")}
# galaxy_vae.yaml's two stages (`set`, `train_only`) on the poster net it extends
STAGES = yaml.safe_load((EXAMPLES / "galaxy_vae.yaml").read_text())["stages"]
BASES["staged"] = {**BASES["galaxy_vae_poster.yaml"], "stages": STAGES}
BASES["staged, train_only first"] = {**BASES["galaxy_vae_poster.yaml"], "stages": STAGES[::-1]}
FIELD_NAMES = ["name", "type", "layers", "solver", "coffee_breaks", "stages", "set", "extends",
               "train_only", "bottoms", "tops", "output_dim", "neuron", "source", "batch_size",
               "lr_policy", "method", "base_lr", "max_iter", "every", "keep", "roles", "report",
               "init_from", "seed", "dtype", "backend", "weight_init", "bias_regu", "epsilon",
               "stepsize", "gamma", "stages", "operation", "output_dims", "shift", "value"]
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(FIELD_NAMES + ["builtin:train", "ReLU", "adam", "Xavier", "L2", "step",
                                   "Add", "../x.yaml", "", "1e-3", "nan", "-1"]),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8), st.integers(-3, 3),
                 st.none(), st.booleans(), st.floats(allow_nan=False))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def _containers(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every dict and list inside a YAML tree (the root included)."""
    found = [path] if isinstance(node, (dict, list)) else []
    children = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else ())
    for key, child in children:
        found += _containers(child, (*path, key))
    return found


def _at(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


@st.composite
def mutated_examples(draw: st.DrawFn) -> Any:
    """An example net with 1-4 random edits: delete a key or item, replace a value with a random
    one (a string, a number, NaN, a list, a nested mapping...), add a key, or wrap a value."""
    raw = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(1, 4))):
        paths = _containers(raw)
        path = draw(st.sampled_from(paths))
        container = _at(raw, path)
        if not container:
            continue
        key = draw(st.sampled_from(sorted(container, key=repr)) if isinstance(container, dict)
                   else st.integers(0, len(container) - 1))
        action = draw(st.sampled_from(["delete", "replace", "add", "wrap"]))
        if action == "delete":
            del container[key]
        elif action == "replace":
            container[key] = draw(values)
        elif action == "wrap":
            container[key] = draw(st.sampled_from([[container[key]], {"type": container[key]}]))
        elif isinstance(container, dict):
            container[draw(keys)] = draw(values)
        else:
            container.insert(key, draw(values))
    return raw


def assert_config_or_mocha_error(parse: Any, *args: Any) -> None:
    try:
        config = parse(*args)
    except MochaError as exc:
        assert str(exc).strip(), repr(exc)  # the CLI prints it folded onto one line
        return
    assert isinstance(config, RunConfig)
    assert config.layers and math.isfinite(config.solver.base_lr)


@SETTINGS
@given(mutated_examples())
def test_mutated_examples_parse_or_raise_a_mocha_error(raw: Any) -> None:
    assert_config_or_mocha_error(parse_config, raw, "net.yaml", "")


@SETTINGS
@given(values)
def test_random_documents_parse_or_raise_a_mocha_error(raw: Any) -> None:
    assert_config_or_mocha_error(parse_config, raw, "net.yaml", "")


def _write(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


@SETTINGS
@given(mutated_examples(), mutated_examples(),
       st.sampled_from(["base.yaml", "net.yaml", ".", "missing.yaml"]) | st.text(max_size=8),
       st.sampled_from([None, "net.yaml", "base.yaml"]), st.dictionaries(keys, values, max_size=3))
def test_files_with_extends_set_and_stages_load_or_raise_a_mocha_error(
    base: Any, child: Any, child_extends: str, base_extends: str | None, overrides: dict
) -> None:
    """Through files: `extends` chains (loops, folders, missing files, junk names included),
    random `set` overrides, stages."""
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(child, dict):
            child["extends"] = child_extends
            child["set"] = overrides
        if isinstance(base, dict) and base_extends:
            base["extends"] = base_extends
        _write(folder, "base.yaml", yaml.safe_dump(base))
        path = _write(folder, "net.yaml", yaml.safe_dump(child))
        assert_config_or_mocha_error(load_config, path)


@SETTINGS
@given(st.one_of(st.text(max_size=200),
                 st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 mutated_examples().map(lambda raw: yaml.safe_dump(raw)[: 300])))
def test_random_text_loads_or_raises_a_mocha_error(text: str) -> None:
    """Arbitrary text, binary junk, and example nets cut off at a random length."""
    with tempfile.TemporaryDirectory() as folder:
        assert_config_or_mocha_error(load_config, _write(folder, "net.yaml", text))


# -- YAML structure: anchors, aliases, merge keys, nesting, duplicate keys ----------------------
ANCHORS = [f"A{i}" for i in range(3)]


@st.composite
def yaml_nodes(draw: st.DrawFn, depth: int = 0) -> str:
    """YAML text for one node, with anchors and aliases that may point anywhere (forward, at
    themselves, at undefined anchors) and mappings that may merge (`<<:`) or repeat keys."""
    leaf = st.sampled_from(["1", "x", "null", "[]", "{}", "0.5", "-3", "InnerProduct"]) | \
        st.sampled_from([f"*{name}" for name in ANCHORS])
    if depth >= 4:
        return draw(leaf)
    kind = draw(st.sampled_from(["leaf", "list", "map", "anchored"]))
    if kind == "leaf":
        return draw(leaf)
    if kind == "anchored":
        return f"&{draw(st.sampled_from(ANCHORS))} {draw(yaml_nodes(depth + 1))}"
    children = draw(st.lists(yaml_nodes(depth + 1), max_size=4))
    if kind == "list":
        return "[" + ", ".join(children) + "]"
    names = draw(st.lists(st.sampled_from(["type", "name", "tops", "<<", "a", "a"]),
                          min_size=len(children), max_size=len(children)))
    return "{" + ", ".join(f"{k}: {v}" for k, v in zip(names, children, strict=True)) + "}"


@SETTINGS
@given(yaml_nodes(), yaml_nodes())
def test_anchors_aliases_and_repeated_keys_load_or_raise_a_mocha_error(
    layers: str, solver: str
) -> None:
    text = f"name: fuzz\ndefaults: {solver}\nlayers: {layers}\nsolver: {solver}\n"
    with tempfile.TemporaryDirectory() as folder:
        assert_config_or_mocha_error(load_config, _write(folder, "net.yaml", text))


TINY_LINES = (EXAMPLES / "tiny.yaml").read_text().splitlines()
MAPPING_LINES = [i for i, line in enumerate(TINY_LINES)
                 if line.strip() and not line.lstrip().startswith(("#", "-", "tops:"))
                 and ": " in line and not line.rstrip().endswith(("{", "[", ","))]


@settings(max_examples=len(MAPPING_LINES), deadline=None, derandomize=True)
@given(st.sampled_from(MAPPING_LINES), st.sampled_from(["same", "other value"]))
def test_any_key_given_twice_is_refused(index: int, value: str) -> None:
    """Repeat one `key: value` line of tiny.yaml (same or another value): YAML would silently
    keep the second; the loader names the key and both lines."""
    line = TINY_LINES[index]
    if value != "same":
        line = line.split(": ")[0] + ": 7"
    text = "\n".join([*TINY_LINES[: index + 1], line, *TINY_LINES[index + 1:]])
    key = TINY_LINES[index].split(":")[0].strip()
    with tempfile.TemporaryDirectory() as folder:
        try:
            load_config(_write(folder, "net.yaml", text))
        except MochaError as exc:
            assert f"key {key!r} given twice in one mapping (lines {index + 1} and " \
                   f"{index + 2})" in str(exc)
        else:
            raise AssertionError(f"duplicate {key!r} accepted")


# -- HDF5 headers: whatever a data file declares, reading it is a result or one MochaError --------
DTYPES = ["<f4", "<f8", ">f4", "<f2", "u1", "i8", "?", "S4", [("a", "<f4"), ("b", "<i2")]]


@st.composite
def hdf5_files(draw: st.DrawFn) -> dict:
    """A recipe for a file holding `data`/`x`: a dataset of any rank, size (up to 10^12 declared
    elements, written or not), dtype, or a group, a dangling soft link, an external link, or
    external raw storage."""
    rank = draw(st.integers(0, 5))
    dims = st.integers(0, 12) | st.sampled_from([69, 10**4, 10**6])
    return {
        "shape": tuple(draw(st.lists(dims, min_size=rank, max_size=rank))),
        "dtype": draw(st.sampled_from(DTYPES)),
        "kind": draw(st.sampled_from(["dataset", "dataset", "group", "soft", "external-link",
                                      "external-storage"])),
        "write": draw(st.booleans()),
        "extra": draw(st.sampled_from([None, "scale", "offset", "provenance", "mask"])),
    }


def _make_hdf5(path: str, recipe: dict) -> None:
    import h5py
    import numpy as np

    shape, dtype = recipe["shape"], np.dtype(recipe["dtype"])
    small = int(np.prod(shape, dtype=object)) * dtype.itemsize <= 2**16
    with h5py.File(path, "w") as handle:
        for name in ("data", "x"):
            kind = recipe["kind"]
            if kind == "group":
                handle.create_group(name)
            elif kind == "soft":
                handle[name] = h5py.SoftLink("/nowhere")
            elif kind == "external-link":
                handle[name] = h5py.ExternalLink(path + ".other", "/data")
            elif kind == "external-storage" and shape and small:
                handle.create_dataset(name, shape=shape, dtype=dtype,
                                      external=[(path + ".raw", 0, h5py.h5f.UNLIMITED)])
            elif small:  # written, or left at the fill value
                handle.create_dataset(name, shape=shape, dtype=dtype,
                                      data=np.ones(shape, dtype=dtype) if recipe["write"] else None)
            else:  # a declared size only: chunks that are never written take no space
                handle.create_dataset(name, shape=shape, dtype=dtype, chunks=(1,) * len(shape))
        if recipe["extra"] and shape:
            handle.create_dataset(recipe["extra"], shape=shape[:1], dtype="<f4",
                                  chunks=(1,) if shape[0] else None)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hdf5_files(), st.integers(0, 3))
def test_any_hdf5_header_reads_or_raises_a_mocha_error(recipe: dict, limit: int) -> None:
    """HDF5Data, galaxy datasets and `prepare` on the file: data, or one MochaError. With a
    1 MB array cap, a declared size beyond it is refused before anything is read."""
    from galaxy_model.dataset import read_dataset
    from galaxy_model.readers import read_hdf5
    from mochapy.layers.hdf5_data import read_rows

    old = os.environ.get("MOCHAPY_MAX_ARRAY_BYTES")
    os.environ["MOCHAPY_MAX_ARRAY_BYTES"] = str(2**20)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "data.h5")
            _make_hdf5(path, recipe)
            for read in (lambda: read_rows(path, "x", limit, "layer 'data'"),
                         lambda: read_dataset(path, limit or None),
                         lambda: next(iter(read_hdf5(path)), None)):
                try:
                    read()
                except MochaError as exc:
                    assert str(exc).strip()
    finally:
        if old is None:
            os.environ.pop("MOCHAPY_MAX_ARRAY_BYTES")
        else:
            os.environ["MOCHAPY_MAX_ARRAY_BYTES"] = old
