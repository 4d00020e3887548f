"""The training losses: agreement with the references they restate, and how their checks get them.

The contract checks themselves run on every registered loss in tests/test_contracts_loss.py.
"""

from __future__ import annotations

import pytest
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


# ---------------------------------------------------------------- the global batch under DDP
_DDP_SPLITS = {"equal": (4, 4), "unequal": (5, 3), "one row here": (1, 7)}


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)


def _losses_of_rows(z1: torch.Tensor, z2: torch.Tensor, cross_rank: bool = True) -> dict[str, torch.Tensor]:
    """Values and input gradients of InfoNCE and uniformity for these rows."""
    out = {}
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    nce = info_nce_loss(a, b, temperature=0.2, cross_rank=cross_rank)
    nce.backward()
    out.update(nce=nce.detach(), nce_grad1=a.grad, nce_grad2=b.grad)
    if not cross_rank and z1.shape[0] < 2:
        return out  # uniformity needs two rows of its own when it does not gather
    c = z1.clone().requires_grad_()
    uniform = uniformity_loss(c, t=2.0, cross_rank=cross_rank)
    uniform.backward()
    out.update(uniform=uniform.detach(), uniform_grad=c.grad)
    return out


def _loss_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        z1, z2 = _global_batch()
        results = {}
        for name, sizes in _DDP_SPLITS.items():
            start = sum(sizes[:rank])
            rows = slice(start, start + sizes[rank])
            results[name] = _losses_of_rows(z1[rows], z2[rows])
            results[name + "/local"] = _losses_of_rows(z1[rows], z2[rows], cross_rank=False)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_batch_losses_see_the_global_batch_under_ddp(tmp_path) -> None:
    """Two gloo ranks: the value is the global batch's loss on both, and each rank's input
    gradient, averaged over ranks as DDP averages, is the single-process gradient."""
    from test_runtime_helpers import free_port, spawn_and_join

    spawn_and_join(_loss_worker, (2, free_port(), str(tmp_path)), nprocs=2, timeout=120)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    z1, z2 = _global_batch()
    single = _losses_of_rows(z1, z2)
    for name, sizes in _DDP_SPLITS.items():
        for rank, got in enumerate(r[name] for r in ranks):
            start = sum(sizes[:rank])
            rows = slice(start, start + sizes[rank])
            for key in ("nce", "uniform"):
                torch.testing.assert_close(got[key], single[key], atol=1e-6, rtol=1e-6)
            for key in ("nce_grad1", "nce_grad2", "uniform_grad"):
                torch.testing.assert_close(got[key] / 2, single[key][rows], atol=1e-6, rtol=1e-5)
            local = ranks[rank][name + "/local"]
            own = _losses_of_rows(z1[rows], z2[rows], cross_rank=False)
            torch.testing.assert_close(local["nce"], own["nce"])
            assert not torch.allclose(local["nce"], single["nce"])
