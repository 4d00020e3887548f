"""Model interface of the fixture catalog: a map from a list of floats to a list of floats."""

from __future__ import annotations

from abc import ABC, abstractmethod


class BaseModel(ABC):
    """Every fixture model maps a feature list to an output list of `width` values."""

    width: int

    @abstractmethod
    def forward(self, features: list[float]) -> list[float]: ...


def clamp(value: float, limit: float) -> float:
    """Keep a value in [-limit, limit]."""
    return max(-limit, min(limit, value))
