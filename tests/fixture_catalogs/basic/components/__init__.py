"""Fixture catalog for the generator's tests: pure standard library, importable."""
