"""Report plugins: what the YAML's `report:` names runs after training (entry points)."""

from __future__ import annotations

from importlib.metadata import entry_points

from mochapy.config import RunConfig
from mochapy.errors import ConfigError


def run_reports(config: RunConfig, out_dir: str, progress: bool) -> None:
    """Call the report hooks the YAML names (entry points of group `mochapy.reports`)."""
    for name in config.report:
        hooks = [e for e in entry_points(group="mochapy.reports") if e.name == name]
        if not hooks:
            raise ConfigError(f"{config.path}: report {name!r} is not installed")
        hooks[0].load()(out_dir, progress=progress)
