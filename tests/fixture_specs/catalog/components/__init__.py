"""A tiny stdlib-only catalog for the generator's own tests (same layout and rules as the real one)."""

from __future__ import annotations
