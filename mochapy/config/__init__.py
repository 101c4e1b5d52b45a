"""YAML nets: one file declares the layers, the solver, the coffee breaks and run settings.

inheritance.py reads net files and resolves how they combine (extends/set/add_layers, stages'
overrides); schema.py validates the resulting mapping into a RunConfig.
"""

from __future__ import annotations

import dataclasses
import os

import yaml

from mochapy.config.inheritance import (
    absolute_paths,
    apply_overrides,
    read_net_yaml,
    text_for_directory,
)
from mochapy.config.schema import RunConfig, parse_config
from mochapy.errors import ConfigError

__all__ = ["RunConfig", "apply_overrides", "load_config", "parse_config", "text_for_directory"]


def load_config(path: str) -> RunConfig:
    """Read and validate a YAML net file (following `extends`)."""
    files: list[str] = []
    raw = read_net_yaml(path, files=files)
    for key in ("set", "add_layers"):
        if isinstance(raw, dict) and key in raw:
            raise ConfigError(f"{path}: '{key}' needs 'extends'")
    text = ""
    if isinstance(raw, dict):
        absolute_paths(raw, os.path.dirname(os.path.abspath(path)))
        text = yaml.safe_dump(raw, sort_keys=False)
    config = parse_config(raw, path, text)
    return dataclasses.replace(config, files=tuple(files),
                               stages=[dataclasses.replace(stage, config=dataclasses.replace(
                                   stage.config, files=tuple(files))) for stage in config.stages])
