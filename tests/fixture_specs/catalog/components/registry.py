"""Name -> component registries of the fixture catalog (the generator reads the decorators statically)."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class PluginRegistry:
    """Components of one kind, by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, version: str = "1.0") -> Callable[[T], T]:
        def decorate(target: T) -> T:
            self.entries[name] = target
            return target

        return decorate

    def create(self, name: str, **params: Any) -> Any:
        return self.entries[name](**params)


model_registry = PluginRegistry("model")
data_registry = PluginRegistry("data")
transform_registry = PluginRegistry("transform")
recipe_registry = PluginRegistry("recipe")
fixture_registry = PluginRegistry("fixture")
