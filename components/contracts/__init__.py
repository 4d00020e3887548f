"""Catalog: contracts."""
