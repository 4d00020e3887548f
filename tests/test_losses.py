"""The training losses: agreement with the references they restate, and how their checks get them.

The contract checks themselves run on every registered loss in tests/test_contracts_loss.py.
"""

from __future__ import annotations

import torch

from components.contracts.losses import BoundLoss, loss_factory, masked_mse_fixture
from components.losses import info_nce_loss, masked_reconstruction_loss, soft_target_cross_entropy, uniformity_loss
from components.models.audiomae_pp import AudioMAEPlusPlus


def test_loss_factory_binds_the_fixture_then_the_checks_overrides(tmp_path) -> None:
    factory = loss_factory(masked_reconstruction_loss, masked_mse_fixture(tmp_path))
    bound = factory()
    assert isinstance(bound, BoundLoss) and bound.keywords == {"norm_pix": True}
    pred, target, mask = bound.sample(torch.Generator().manual_seed(0), 3)
    assert pred.shape == target.shape and mask.shape == pred.shape[:2]
    assert torch.equal(bound(pred, target, mask), masked_reconstruction_loss(pred, target, mask, norm_pix=True))
    plain = factory(norm_pix=False)
    assert torch.equal(plain(pred, target, mask), masked_reconstruction_loss(pred, target, mask))
    import pytest

    with pytest.raises(ValueError, match="no 'inputs' sampler"):
        loss_factory(uniformity_loss)().sample(torch.Generator(), 2)


def test_uniformity_reaches_its_bound_on_a_regular_simplex() -> None:
    # Unit vectors of R^3 shifted to mean zero: 3 points of a regular simplex (equilateral triangle).
    z = torch.eye(3) - 1 / 3
    value = uniformity_loss(z, t=2.0)
    assert torch.allclose(value, torch.tensor(-2.0 * 2 * 3 / 2), atol=1e-5)


def test_masked_mse_matches_the_models_own_loss() -> None:
    model = AudioMAEPlusPlus(preset="tiny", img_size=(16, 16), patch_size=(4, 8), embed_dim=16, depth=1, num_heads=2,
                             decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, norm_pix_loss=True)
    x = torch.randn(2, 1, 16, 16)
    loss, pred, mask = model(x, mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    ours = masked_reconstruction_loss(pred, model.patchify(x), mask, norm_pix=True)
    assert torch.allclose(loss, ours, atol=1e-6)


def test_losses_reject_malformed_inputs() -> None:
    import pytest

    with pytest.raises(ValueError, match="equal shape"):
        info_nce_loss(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)
    with pytest.raises(ValueError, match="B >= 2"):
        uniformity_loss(torch.randn(1, 4))
    with pytest.raises(ValueError, match="must match"):
        masked_reconstruction_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.ones(2, 3))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        soft_target_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), label_smoothing=1.0)
