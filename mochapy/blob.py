"""Blobs: named, batch-first arrays flowing between layers, each with an optional gradient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Blob:
    """A named array of shape (N, ...) and, when something upstream learns, its gradient `diff`."""

    name: str
    data: Any
    diff: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def batch_size(self) -> int:
        return int(self.data.shape[0])

    def flat(self) -> Any:
        """The data as (N, features), the view InnerProduct and the losses work on."""
        return self.data.reshape(self.data.shape[0], -1)

    def flat_diff(self) -> Any:
        return self.diff.reshape(self.diff.shape[0], -1)
