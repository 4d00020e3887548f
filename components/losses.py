"""Training objectives shared by the recipes.

* ``masked_reconstruction_loss``: the MAE objective, mean squared error over masked patches
  only (He et al., 2022), optionally against per-patch normalised targets (``norm_pix``).
* ``info_nce_loss``: InfoNCE / NT-Xent between two views (van den Oord et al., 2018; Chen et
  al., 2020): each row of ``z1`` must pick its partner row of ``z2`` among all rows.
* ``uniformity_loss``: Wang & Isola (2020), ``log E exp(-t ||zi - zj||^2)`` over distinct pairs
  of L2-normalised embeddings; lower means more uniformly spread on the sphere.
* ``soft_target_cross_entropy``: cross-entropy against soft (mixup) targets with label smoothing.

Each is registered with ``loss_registry`` (``"masked_mse"``, ``"info_nce"``, ``"uniformity"``,
``"soft_target_cross_entropy"``), so its contract checks (``components/contracts/losses.py``)
run in the toolkit's tests and in every emitted test suite whose script holds it. Tensor
inputs are positional-only; the keyword parameters are what a spec may set.

Under DDP (torchrun, several ranks) the batch-level losses, InfoNCE and uniformity, see the
*global* batch: every rank gathers all ranks' embeddings (``gather_rows``), computes the loss
of the whole global batch with its own rows differentiable, and scales its gradient by the
world size, so DDP's gradient averaging yields exactly the single-process gradient of the
global batch (checked against one process in ``tests/test_losses.py``). The value is the
global batch's loss on every rank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from components.distributed import gather_rows
from components.registry import loss_registry


def _global_gradient(loss: torch.Tensor, world_size: int) -> torch.Tensor:
    """``loss``'s value with ``world_size`` times its gradient: DDP averages gradients over
    ranks, and each rank differentiates the global loss for its own rows only."""
    if world_size == 1:
        return loss
    return loss.detach() + world_size * (loss - loss.detach())


@loss_registry.register("masked_mse")
def masked_reconstruction_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    /,
    *,
    norm_pix: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """MSE over masked patches: ``pred``/``target`` ``[B, N, P]``, ``mask`` ``[B, N]`` with 1 = masked.

    Computed in float32 (bf16 squares lose too much precision); with nothing masked it falls
    back to the mean over all patches so that a zero mask ratio still trains.

    Args:
        norm_pix: Normalise each target patch to zero mean and unit variance before the
            MSE (MAE's norm_pix_loss).
        eps: Added to the per-patch variance in that normalisation so constant patches
            stay finite.
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(
            f"masked_reconstruction_loss: pred {tuple(pred.shape)}, target {tuple(target.shape)} must match "
            f"and mask {tuple(mask.shape)} must be [B, N]"
        )
    target = target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)
    mask = mask.float()
    masked = mask.sum()
    return torch.where(
        masked > 0, (per_patch * mask).sum() / masked.clamp_min(1.0), per_patch.mean()
    )


@loss_registry.register("info_nce")
def info_nce_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    /,
    *,
    temperature: float = 0.1,
    symmetric: bool = True,
    cross_rank: bool = True,
) -> torch.Tensor:
    """InfoNCE between paired rows of ``z1`` and ``z2`` (``[B, D]``), cosine similarity / temperature.

    Row ``i`` of ``z1`` is the positive of row ``i`` of ``z2``; the other rows are negatives.
    ``symmetric`` averages both directions (CLIP style). Under DDP the negatives are the rows
    of every rank (module docstring); ``cross_rank=False`` keeps them to this rank's batch.
    For identical, mutually orthogonal pairs the value is
    ``log(1 + (B - 1) exp(-1 / temperature))``: the analytic check
    ``check_identical_orthogonal_pairs_are_analytic`` in ``components/contracts/losses.py``.

    Args:
        temperature: Divides the cosine similarities before the softmax; lower values
            sharpen the contrast between positives and negatives.
        symmetric: Average the z1-to-z2 and z2-to-z1 directions (CLIP style) instead of
            z1-to-z2 only.
        cross_rank: Under DDP, use every rank's rows as negatives (the global batch);
            False keeps them to this rank's batch.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"info_nce_loss expects two [B, D] tensors of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"info_nce_loss: temperature must be > 0, got {temperature}")
    a = F.normalize(z1.float(), dim=-1)
    b = F.normalize(z2.float(), dim=-1)
    world_size = 1
    if cross_rank:
        pairs, world_size = gather_rows(torch.stack([a, b], dim=1))
        a, b = pairs.unbind(1)
    logits = a @ b.t() / temperature
    targets = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.t(), targets))
    return _global_gradient(loss, world_size)


@loss_registry.register("uniformity")
def uniformity_loss(
    z: torch.Tensor, /, *, t: float = 2.0, cross_rank: bool = True
) -> torch.Tensor:
    """``log mean_{i<j} exp(-t ||zi - zj||^2)`` of L2-normalised rows of ``z [B, D]`` (B >= 2).

    Its maximum, 0, is reached by collapsed embeddings (all rows equal); its minimum is
    ``log exp(-t * 2B/(B-1))`` for B points whose mean is the origin (a regular simplex).
    Under DDP the pairs span every rank's rows (module docstring); ``cross_rank=False``
    keeps them to this rank's batch.

    Args:
        t: Scale t in log mean exp(-t ||zi - zj||^2); larger values weigh close pairs
            more.
        cross_rank: Under DDP, form pairs over every rank's rows (the global batch);
            False keeps them to this rank's batch.
    """
    if z.dim() != 2:
        raise ValueError(f"uniformity_loss expects [B, D], got {tuple(z.shape)}")
    x = F.normalize(z.float(), dim=-1)
    world_size = 1
    # under DDP one row per rank is enough: the pairs span the global batch
    if cross_rank:
        x, world_size = gather_rows(x)
    if x.shape[0] < 2:
        raise ValueError(
            f"uniformity_loss expects [B, D] with B >= 2, got {tuple(z.shape)}"
        )
    sq_dists = torch.pdist(x, p=2).pow(2)
    # logsumexp - log(count) is the log of the mean, stable for large t.
    value = torch.logsumexp(-t * sq_dists, dim=0) - math.log(sq_dists.numel())
    return _global_gradient(value, world_size)


@loss_registry.register("soft_target_cross_entropy")
def soft_target_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, /, *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of ``logits [B, K]`` against class indices ``[B]`` or soft targets ``[B, K]``.

    Label smoothing mixes the target with the uniform distribution: ``(1 - s) * y + s / K``,
    as ``F.cross_entropy`` does for index targets, so both target kinds agree.

    Args:
        label_smoothing: Share s of the target mixed with the uniform distribution, (1 -
            s) y + s / K; 0 = no smoothing.
    """
    num_classes = logits.shape[-1]
    if targets.dim() == 1:
        targets = F.one_hot(targets.long(), num_classes).to(logits.dtype)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    targets = targets.float() * (1.0 - label_smoothing) + label_smoothing / num_classes
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()
