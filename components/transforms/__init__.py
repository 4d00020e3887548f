"""Catalog: transforms (signal front ends that run batched on the training device)."""

from __future__ import annotations

from components.transforms.base import SignalTransform

__all__ = ["SignalTransform"]
