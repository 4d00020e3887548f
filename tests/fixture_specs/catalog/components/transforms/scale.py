"""Feature transforms of the fixture catalog."""

from __future__ import annotations

from components.registry import transform_registry


@transform_registry.register("scale", version="0.3")
class Scale:
    """Multiply every sample by `factor` and pad/crop to `target_frames`."""

    def __init__(self, factor: float = 1.0, target_frames: int = 4) -> None:
        self.factor = factor
        self.target_frames = target_frames

    def __call__(self, signal: list[float]) -> list[float]:
        out = [value * self.factor for value in signal[: self.target_frames]]
        return out + [0.0] * (self.target_frames - len(out))
