"""Catalog: data."""
