"""Coffee breaks, the context they see, their registry, and the statistics lounge."""

from mochapy.coffee.base import (
    COFFEE_BREAKS,
    BreakContext,
    CoffeeBreak,
    CoffeeConfig,
    SolverState,
    ValidationConfig,
    compose_breaks,
    parse_coffee,
    register_break,
)
from mochapy.coffee.breaks import Snapshot, TrainingSummary, ValidationPerformance
from mochapy.coffee.lounge import CoffeeLounge

__all__ = [
    "COFFEE_BREAKS", "BreakContext", "CoffeeBreak", "CoffeeConfig", "CoffeeLounge", "Snapshot",
    "SolverState", "TrainingSummary", "ValidationConfig", "ValidationPerformance", "compose_breaks",
    "parse_coffee", "register_break",
]
