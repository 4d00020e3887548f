"""Name -> component registries: the catalog's plugin system.

At run time ``model_registry.create("audiomae++", preset="tiny")`` builds a component by
name. The generator never imports this module: it reads the same ``@registry.register``
decorators statically, so their arguments must be literals.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class UnknownComponentError(KeyError):
    """Raised for a name that no component of the registry's kind was registered under."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    version: str
    target: Callable[..., Any]


class PluginRegistry:
    """Components of one kind (models, data sets, transforms, recipes, ...), by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry] = {}

    def register(self, name: str, version: str = "1.0") -> Callable[[T], T]:
        """Class or function decorator: ``@model_registry.register("baseline", version="1.0")``."""
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"{self.kind} registry: a component name must be a non-empty string"
            )

        def decorate(target: T) -> T:
            known = self._entries.get(name)
            if known is not None and known.target is not target:
                where = f"{known.target.__module__}.{known.target.__qualname__}"
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by {where}"
                )
            self._entries[name] = RegistryEntry(name, version, target)
            return target

        return decorate

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._entries[name].target
        except KeyError:
            raise UnknownComponentError(self._unknown_message(name)) from None

    def entry(self, name: str) -> RegistryEntry:
        self.get(name)
        return self._entries[name]

    def create(self, name: str, **params: Any) -> Any:
        return self.get(name)(**params)

    def list(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _unknown_message(self, name: str) -> str:
        known = self.list()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known) or '(none)'}"


model_registry = PluginRegistry("model")
data_registry = PluginRegistry("data set")
transform_registry = PluginRegistry("transform")
recipe_registry = PluginRegistry("recipe")
loss_registry = PluginRegistry("loss")
# Contract fixtures: "<kind>/<name>" -> function(workdir) returning small constructor kwargs.
fixture_registry = PluginRegistry("contract fixture")

REGISTRIES: dict[str, PluginRegistry] = {
    "model": model_registry,
    "data": data_registry,
    "transform": transform_registry,
    "recipe": recipe_registry,
    "loss": loss_registry,
}


def load_catalog() -> None:
    """Import every catalog package so that all decorators have run."""
    import importlib

    for package in (
        "components.models",
        "components.data",
        "components.transforms",
        "components.recipes",
        "components.losses",
    ):
        importlib.import_module(package)
