"""Layers: re-exported from the package, as timm does."""

from __future__ import annotations

from components.layers.blocks import Block as Block
from components.layers.blocks import tagged

__all__ = ["Block", "tagged"]
