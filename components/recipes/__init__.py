"""Catalog: recipes."""
