"""Fixture catalog: contracts."""

from __future__ import annotations
