"""Catalog: transforms (signal front ends that run batched on the training device)."""

from components.transforms.base import SignalTransform

__all__ = ["SignalTransform"]
