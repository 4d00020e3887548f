"""A minimal registry: the generator reads its decorators statically and drops them."""

from __future__ import annotations

from typing import Any, Callable


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, version: str = "1.0") -> Callable[[Any], Any]:
        def decorate(target: Any) -> Any:
            self.entries[name] = target
            return target

        return decorate


model_registry = Registry("model")
recipe_registry = Registry("recipe")
data_registry = Registry("data")
