"""Every registered transform passes every transform contract check (tested on registration)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import components.contracts.transform as transform_contracts
import components.transforms  # noqa: F401  (registers the transforms)
from components.registry import fixture_registry, transform_registry

CHECKS = sorted(
    (name, fn) for name, fn in inspect.getmembers(transform_contracts, inspect.isfunction) if name.startswith("check_")
)
TRANSFORMS = transform_registry.list()


def make_factory(name: str, workdir: Path) -> Callable[..., Any]:
    fixture_name = f"transform/{name}"
    if fixture_name not in fixture_registry:
        pytest.fail(
            f"transform {name!r} has no contract fixture {fixture_name!r}: register one in"
            f" components/contracts/transform.py with @fixture_registry.register({fixture_name!r})"
        )
    kwargs = fixture_registry.get(fixture_name)(workdir)

    def factory(**overrides: Any) -> Any:
        return transform_registry.create(name, **{**kwargs, **overrides})

    return factory


def test_front_ends_are_registered() -> None:
    assert {"kaldi_fbank", "log_mel", "iq_spectrogram", "iq_patches"} <= set(TRANSFORMS)
    assert len(CHECKS) >= 7


@pytest.mark.parametrize("check_name,check", CHECKS, ids=[name for name, _ in CHECKS])
@pytest.mark.parametrize("transform_name", TRANSFORMS)
def test_transform_contract(transform_name: str, check_name: str, check: Callable[..., None], tmp_path: Path) -> None:
    if check_name == "check_cpu_and_gpu_agree" and not torch.cuda.is_available():
        pytest.skip("no CUDA device: CPU/GPU agreement is checked on GPU machines")
    torch.set_num_threads(1)
    check(make_factory(transform_name, tmp_path))
