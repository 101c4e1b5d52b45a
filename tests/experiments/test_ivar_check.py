"""experiments/ivar_check.py: the measured / predicted variance ratios it reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "ivar_check.py"
spec = importlib.util.spec_from_file_location("ivar_check", SCRIPT)
ivar_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ivar_check)


def test_the_current_ivar_matches_and_the_linearised_one_overstates() -> None:
    record = ivar_check.measure(6, 13, 32)
    current, old = record["summary"]["ivar-v2 all"], record["summary"]["ivar-v1 all"]
    assert 0.95 < current["min"] and current["max"] < 1.05
    assert old["min"] < 0.8  # ivar-v1's overstatement, clipped skies among six images
    assert "| ivar-v2 | sky |" in ivar_check.markdown(record)
