"""Fixture catalog: models."""

from __future__ import annotations
