"""The layer graph: layers ordered so every blob is produced before it is read, loops named,
the layers an output needs, and shift layers folded into the neuron before them. Used by the
config (to check a net file) and by Net (to run it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from mochapy.errors import TopologyError
from mochapy.layers import LayerConfig
from mochapy.layers.power import PowerConfig
from mochapy.neurons import Exponential


def topological_order(
    configs: Sequence[LayerConfig], inputs: Iterable[str] = ()
) -> list[LayerConfig]:
    """Order layers so every bottom is produced before it is read (file order breaks ties)."""
    inputs = set(inputs)
    producer: dict[str, LayerConfig] = {}
    names: set[str] = set()
    for cfg in configs:
        if cfg.name in names:
            raise TopologyError(f"two layers are named {cfg.name!r}")
        names.add(cfg.name)
        for top in cfg.tops:
            if top in inputs:
                raise TopologyError(f"layer {cfg.name!r} produces blob {top!r}, which is an input")
            if top in producer:
                raise TopologyError(
                    f"blob {top!r} is produced by both layer {producer[top].name!r} "
                    f"and layer {cfg.name!r}"
                )
            producer[top] = cfg
    for cfg in configs:
        for bottom in cfg.bottoms:
            if bottom not in producer and bottom not in inputs:
                raise TopologyError(
                    f"layer {cfg.name!r} reads blob {bottom!r}, which no layer produces"
                )
    done: set[str] = set(inputs)
    ordered: list[LayerConfig] = []
    pending = list(configs)
    while pending:
        ready = [c for c in pending if all(b in done for b in c.bottoms)]
        if not ready:
            raise TopologyError(describe_cycle(pending[0], producer, done))
        for cfg in ready:
            ordered.append(cfg)
            done.update(cfg.tops)
            pending.remove(cfg)
    return ordered


def describe_cycle(
    start: LayerConfig, producer: dict[str, LayerConfig], done: set[str]
) -> str:
    """Follow unmet bottoms from a stuck layer until a layer repeats; name that loop's layers
    and blobs (the stuck layer itself may only sit downstream of the loop)."""
    path: list[tuple[LayerConfig, str]] = []
    seen: dict[str, int] = {}
    layer = start
    while layer.name not in seen:
        seen[layer.name] = len(path)
        blob = next(b for b in layer.bottoms if b not in done)
        path.append((layer, blob))
        layer = producer[blob]
    loop = path[seen[layer.name]:]
    return "cycle: " + ", ".join(
        f"layer {cfg.name!r} reads blob {blob!r} from layer {producer[blob].name!r}"
        for cfg, blob in loop
    )


def prune(configs: Sequence[LayerConfig], inputs: set[str], outputs: set[str]) -> list[LayerConfig]:
    """Keep only the layers needed to compute `outputs` from `inputs` (and the sources)."""
    producer = {top: cfg for cfg in configs for top in cfg.tops}
    needed: list[LayerConfig] = []
    wanted = list(outputs)
    seen: set[str] = set()
    while wanted:
        blob = wanted.pop()
        if blob in seen or blob in inputs:
            continue
        seen.add(blob)
        if blob not in producer:
            raise TopologyError(f"output blob {blob!r} is produced by no layer")
        cfg = producer[blob]
        if cfg not in needed:
            needed.append(cfg)
            wanted.extend(cfg.bottoms)
    return [cfg for cfg in configs if cfg in needed]


def fold_shifts(configs: Sequence[LayerConfig], keep: Iterable[str] = ()) -> list[LayerConfig]:
    """Each Power layer that only shifts (power 1, scale 1) an Exponential neuron's output folded
    into that neuron (Exponential.shift), the layer with the neuron writing the Power's top.

    Why: the sd floors (sigma = 0.001 + exp(.)) then cost no passes of their own (the Power's
    copy forward and backward, and the neuron's backward reading y), and the numbers are the
    same: the neuron adds the same float, and its slope exp(x) is recomputed. A layer's `neuron`
    field is applied to its one top (InnerProduct, ContrastLevel). The blob between the two is
    not made, so a Power is kept where another layer reads that blob or it is in `keep` (an
    output asked for by name).
    """
    readers: dict[str, int] = {}
    for cfg in configs:
        for bottom in cfg.bottoms:
            readers[bottom] = readers.get(bottom, 0) + 1
    producer = {top: cfg for cfg in configs for top in cfg.tops}
    kept = set(keep)
    folded: dict[str, LayerConfig] = {}
    dropped: set[str] = set()
    for cfg in configs:
        if not (isinstance(cfg, PowerConfig) and cfg.power == 1 and cfg.scale == 1):
            continue
        blob = cfg.bottoms[0]
        source = producer.get(blob)
        neuron = getattr(source, "neuron", None)
        if (source is not None and isinstance(neuron, Exponential) and not neuron.shift
                and readers[blob] == 1 and blob not in kept):
            folded[source.name] = dataclasses.replace(
                source, tops=cfg.tops, neuron=dataclasses.replace(neuron, shift=cfg.shift)
            )
            dropped.add(cfg.name)
    return [folded.get(cfg.name, cfg) for cfg in configs if cfg.name not in dropped]
