"""Every registered model passes every model contract check (a new model is tested on registration)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from contract_harness import ContractKind

import components.contracts.model as model_contracts
import components.models  # noqa: F401  (registers the models)
from components.registry import model_registry

MODELS = ContractKind("model", "model", model_registry, model_contracts)


def test_models_are_registered() -> None:
    assert {"audiomae++", "baseline"} <= set(model_registry.list())
    assert len(MODELS.checks) >= 8
    assert MODELS.unknown_targets() == []


@pytest.mark.parametrize("model_name,check_name,check", MODELS.cases())
def test_model_contract(model_name: str, check_name: str, check: Callable[..., None], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    check(MODELS.factory(model_name, tmp_path))
