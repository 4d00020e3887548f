"""Catalog: models (masked autoencoders over [B, C, T, F] inputs, and a classifier head)."""

from __future__ import annotations

from components.models.base import BaseAutoencoder

__all__ = ["BaseAutoencoder"]
