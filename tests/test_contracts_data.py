"""Every registered data set passes every data contract check (tested on registration)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import components.contracts.data as data_contracts
import components.data  # noqa: F401  (registers the data sets)
from components.registry import data_registry, fixture_registry

CHECKS = sorted((name, fn) for name, fn in inspect.getmembers(data_contracts, inspect.isfunction) if name.startswith("check_"))
DATASETS = data_registry.list()


def make_factory(name: str, workdir: Path) -> Callable[..., Any]:
    fixture_name = f"data/{name}"
    if fixture_name not in fixture_registry:
        pytest.fail(
            f"data set {name!r} has no contract fixture {fixture_name!r}: register one in"
            f" components/contracts/data.py with @fixture_registry.register({fixture_name!r})"
        )
    try:
        kwargs = fixture_registry.get(fixture_name)(workdir)
    except ModuleNotFoundError as error:  # optional readers (h5py) are tested where installed
        pytest.skip(f"fixture {fixture_name!r} needs an optional package: {error}")

    def factory(**overrides: Any) -> Any:
        return data_registry.create(name, **{**kwargs, **overrides})

    return factory


def test_data_sets_are_registered() -> None:
    assert {"esc50", "audio_folder", "radioml2016", "radioml2018", "synthetic_audio", "synthetic_iq"} <= set(DATASETS)
    assert len(CHECKS) >= 4


@pytest.mark.parametrize("check_name,check", CHECKS, ids=[name for name, _ in CHECKS])
@pytest.mark.parametrize("data_name", DATASETS)
def test_data_contract(data_name: str, check_name: str, check: Callable[..., None], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    check(make_factory(data_name, tmp_path))
