"""One harness for the toolkit's contract tests (tests/test_contracts_<kind>.py).

Every ``check_*`` function of ``components/contracts/<kind>.py`` is applied to every registered
component of that kind, except that a check marked ``@applies_to("a", "b")`` is applied only to
the components registered as ``a`` and ``b`` (components/README.md §5). The generator's test
suite emitter (generator/testsuite.py) follows the same rules, read statically.

A check gets ``factory(**overrides)``, built from the component's fixture
``"<kind>/<name>"``: by default it creates the component from the fixture's kwargs plus the
overrides; a contracts module that defines ``<kind>_factory(component, fixture_kwargs)``
(losses: ``loss_factory``) builds the factory itself. A missing fixture fails the test, naming it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

from components.registry import PluginRegistry, fixture_registry

Check = Callable[[Callable[..., Any]], None]


@dataclass(frozen=True)
class ContractKind:
    """The contract checks of one component kind, and the registry they apply to."""

    kind: str  # "model": fixtures are named "model/<name>"
    noun: str  # how messages name a component of this kind: "data set"
    registry: PluginRegistry
    contracts: ModuleType  # components.contracts.<kind>
    skip_missing_packages: bool = False  # a fixture needing an optional package (h5py) skips

    @property
    def checks(self) -> list[tuple[str, Check]]:
        """``(name, check)`` for every ``check_*`` function of the contracts module, by name."""
        found = inspect.getmembers(self.contracts, inspect.isfunction)
        return sorted((name, fn) for name, fn in found if name.startswith("check_"))

    @property
    def path(self) -> str:
        return f"components/contracts/{Path(self.contracts.__file__ or '').name}"

    def applies(self, check: Check, name: str) -> bool:
        """Whether ``check`` applies to the component registered as ``name``."""
        targets = getattr(check, "applies_to", None)
        return targets is None or name in targets

    def cases(self) -> list[Any]:
        """``pytest.param(component name, check name, check)`` for every check that applies."""
        return [
            pytest.param(name, check_name, check, id=f"{name}-{check_name}")
            for name in self.registry.list()
            for check_name, check in self.checks
            if self.applies(check, name)
        ]

    def unknown_targets(self) -> list[str]:
        """``check_x -> 'name'`` for every ``@applies_to`` name no component is registered as."""
        return [
            f"{check_name} -> {target!r}"
            for check_name, check in self.checks
            for target in sorted(getattr(check, "applies_to", ()))
            if target not in self.registry
        ]

    def factory(self, name: str, workdir: Path) -> Callable[..., Any]:
        """``factory(**overrides)`` for the component ``name``, from its contract fixture."""
        fixture_name = f"{self.kind}/{name}"
        if fixture_name not in fixture_registry:
            pytest.fail(
                f"{self.noun} {name!r} has no contract fixture {fixture_name!r}: register one in {self.path} "
                f"with @fixture_registry.register({fixture_name!r}) returning small constructor kwargs"
            )
        try:
            kwargs = fixture_registry.get(fixture_name)(workdir)
        except ModuleNotFoundError as error:
            if not self.skip_missing_packages:
                raise
            pytest.skip(f"fixture {fixture_name!r} needs an optional package: {error}")
        build = getattr(self.contracts, f"{self.kind}_factory", None)
        if build is not None:
            return build(self.registry.get(name), kwargs)

        def factory(**overrides: Any) -> Any:
            return self.registry.create(name, **{**kwargs, **overrides})

        return factory
