"""Every registered loss passes every loss contract check that applies to it (tested on registration).

Generic checks (finite scalar and gradients, batch order, bf16 inputs) apply to every loss; a check
marked ``@applies_to("info_nce")`` only to the losses it names (components/README.md §5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from contract_harness import ContractKind

import components.contracts.losses as loss_contracts
import components.losses  # noqa: F401  (registers the losses)
from components.losses import info_nce_loss, masked_reconstruction_loss, soft_target_cross_entropy, uniformity_loss
from components.registry import loss_registry

LOSSES = ContractKind("loss", "loss", loss_registry, loss_contracts)


def test_losses_are_registered_under_their_names() -> None:
    assert loss_registry.get("masked_mse") is masked_reconstruction_loss
    assert loss_registry.get("info_nce") is info_nce_loss
    assert loss_registry.get("uniformity") is uniformity_loss
    assert loss_registry.get("soft_target_cross_entropy") is soft_target_cross_entropy
    assert LOSSES.unknown_targets() == []


def test_specific_checks_reach_only_their_losses() -> None:
    pairs = {(case.values[0], case.values[1]) for case in LOSSES.cases()}
    generic = {"check_scalar_with_finite_gradients", "check_batch_order_does_not_matter", "check_bfloat16_inputs_give_the_float32_value"}
    for name in loss_registry.list():
        assert {(name, check) for check in generic} <= pairs, name
    assert ("info_nce", "check_identical_orthogonal_pairs_are_analytic") in pairs
    assert ("uniformity", "check_identical_orthogonal_pairs_are_analytic") not in pairs
    assert ("uniformity", "check_collapse_is_maximal") in pairs
    assert ("masked_mse", "check_counts_masked_patches_only") in pairs
    assert ("info_nce", "check_counts_masked_patches_only") not in pairs
    assert ("uniformity", "check_non_negative") not in pairs  # a log-mean of values <= 1


@pytest.mark.parametrize("loss_name,check_name,check", LOSSES.cases())
def test_loss_contract(loss_name: str, check_name: str, check: Callable[..., None], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    check(LOSSES.factory(loss_name, tmp_path))


def test_a_loss_without_fixture_fails_naming_it(tmp_path: Path) -> None:
    from components.registry import PluginRegistry

    registry = PluginRegistry("loss")
    registry.register("unfixtured")(uniformity_loss)
    with pytest.raises(pytest.fail.Exception, match=r"loss 'unfixtured' has no contract fixture 'loss/unfixtured'"):
        ContractKind("loss", "loss", registry, loss_contracts).factory("unfixtured", tmp_path)
