"""Fixture catalog: recipes."""

from __future__ import annotations
