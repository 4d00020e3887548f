"""Fixture catalog: data."""

from __future__ import annotations
