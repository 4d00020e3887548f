"""Every registered model passes every model contract check (a new model is tested on registration)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import components.contracts.model as model_contracts
import components.models  # noqa: F401  (registers the models)
from components.registry import fixture_registry, model_registry

CHECKS = sorted(
    (name, fn) for name, fn in inspect.getmembers(model_contracts, inspect.isfunction) if name.startswith("check_")
)
MODELS = model_registry.list()


def make_factory(name: str, workdir: Path) -> Callable[..., Any]:
    fixture_name = f"model/{name}"
    if fixture_name not in fixture_registry:
        pytest.fail(
            f"model {name!r} has no contract fixture {fixture_name!r}: register one in components/contracts/model.py "
            f"with @fixture_registry.register({fixture_name!r}) returning small constructor kwargs"
        )
    kwargs = fixture_registry.get(fixture_name)(workdir)

    def factory(**overrides: Any) -> Any:
        return model_registry.create(name, **{**kwargs, **overrides})

    return factory


def test_models_are_registered() -> None:
    assert {"audiomae++", "baseline"} <= set(MODELS)
    assert len(CHECKS) >= 8


@pytest.mark.parametrize("check_name,check", CHECKS, ids=[name for name, _ in CHECKS])
@pytest.mark.parametrize("model_name", MODELS)
def test_model_contract(model_name: str, check_name: str, check: Callable[..., None], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    check(make_factory(model_name, tmp_path))
