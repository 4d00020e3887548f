"""Fixture catalog with reference cycles across modules (never imported, only inlined)."""
