"""Tiny linear models: enough arithmetic to train in microseconds."""

from __future__ import annotations

from typing import Literal

from components.models.base import BaseModel, clamp
from components.registry import model_registry

LIMIT = 1e6


def helper(values: list[float]) -> float:
    """Mean of a list (a name that collides with data.toy.helper on purpose)."""
    return sum(values) / max(1, len(values))


@model_registry.register("tiny", version="1.2")
class TinyModel(BaseModel):
    """A linear map with one weight per output."""

    def __init__(
        self,
        width: int = 4,
        scale: float = 1.0,
        label: str = "tiny",
        kernel: tuple[int, int] = (3, 3),
        mode: Literal["sum", "mean"] = "mean",
        bias: float | None = None,
        tags: list[str] | None = None,
        limit: float = float("inf"),
        layout: list[list[float]] | None = None,
    ) -> None:
        self.width = width
        self.scale = scale
        self.label = label
        self.kernel = kernel
        self.mode = mode
        self.bias = bias
        self.tags = list(tags or [])
        self.limit = limit
        self.layout = layout
        self.weights = [0.0] * width

    def forward(self, features: list[float]) -> list[float]:
        pooled = helper(features) if self.mode == "mean" else sum(features)
        offset = self.bias or 0.0
        return [
            clamp(w * pooled * self.scale + offset, min(self.limit, LIMIT))
            for w in self.weights
        ]


@model_registry.register("deep")
class DeepModel(TinyModel):
    """A model with a required parameter (for missing-parameter errors)."""

    def __init__(self, depth: int, width: int = 4) -> None:
        super().__init__(width=width)
        self.depth = depth


class UnusedModel(BaseModel):
    """Never registered, never reached: tree shaking must drop it."""

    def forward(self, features: list[float]) -> list[float]:
        return features
