"""Registry stand-in: only its decorators matter to the generator."""

from __future__ import annotations

from typing import Any, Callable


class Registry:
    def register(self, name: str, version: str = "1.0") -> Callable[[Any], Any]:
        return lambda target: target


recipe_registry = Registry()
