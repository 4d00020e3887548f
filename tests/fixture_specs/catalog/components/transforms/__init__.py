"""Fixture catalog: transforms."""

from __future__ import annotations
