"""Coffee breaks and the statistics lounge."""

from mochapy.coffee.breaks import CoffeeBreak, Snapshot, TrainingSummary, ValidationPerformance
from mochapy.coffee.lounge import CoffeeLounge

__all__ = ["CoffeeBreak", "CoffeeLounge", "Snapshot", "TrainingSummary", "ValidationPerformance"]
