"""Catalog: transforms."""
