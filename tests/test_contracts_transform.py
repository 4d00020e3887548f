"""Every registered transform passes every transform contract check (tested on registration)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from contract_harness import ContractKind

import components.contracts.transform as transform_contracts
import components.transforms  # noqa: F401  (registers the transforms)
from components.registry import transform_registry

TRANSFORMS = ContractKind("transform", "transform", transform_registry, transform_contracts)


def test_front_ends_are_registered() -> None:
    assert {"kaldi_fbank", "log_mel", "iq_spectrogram", "iq_patches"} <= set(transform_registry.list())
    assert len(TRANSFORMS.checks) >= 7
    assert TRANSFORMS.unknown_targets() == []


@pytest.mark.parametrize("transform_name,check_name,check", TRANSFORMS.cases())
def test_transform_contract(transform_name: str, check_name: str, check: Callable[..., None], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    check(TRANSFORMS.factory(transform_name, tmp_path))
