"""Training-time augmentation, batched on the device: SpecAugment, mixup, gain and time roll.

Each function takes an optional ``torch.Generator`` (on the batch's device for the tensor
draws) so a recipe can make augmentation reproducible and resumable; without one, torch's
global RNG is used. Every item of a batch gets its own draw.

SpecAugment runs on the transform's output, after normalisation, but masks as AudioMAE's
fine-tuning does (``dataset.py``, as AST's): there torchaudio's masks write 0 into the *raw*
log-mel fbank, which is normalised after, so a masked bin holds ``(0 - mean) / (2 std)``.
``spec_augment_fill_value(transform)`` is that value for a transform, and masking the
normalised features with it gives the official features exactly (the normalisation is
elementwise), without mixup: AudioMAE mixes the waveforms before the fbank and masks the mix,
where ``ClassificationObjective`` masks each clip's features and then mixes them.
"""

from __future__ import annotations

import random

import torch
from torch import nn


def _uniform(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device)


def spec_augment_fill_value(transform: nn.Module | None) -> float:
    """What a SpecAugment mask writes into ``transform``'s output: the image of a raw 0.

    A transform with a fixed elementwise normalisation (``normalise``, as ``kaldi_fbank``'s
    ``(x - mean) / (2 std)``) maps a raw 0 to one value, computed here in float32 as the
    transform computes it. Precomputed features' wrapper (``.transform``) is looked through.
    Without one (``None``, no normalisation, or a per-clip standardisation, whose image of a
    raw 0 varies by clip) masks write 0: the raw value, or the clip's mean.
    """
    inner = getattr(transform, "transform", transform)
    normalise = getattr(inner, "normalise", None)
    if not callable(normalise):
        return 0.0
    with torch.no_grad():
        value = normalise(torch.zeros((), dtype=torch.float32))
    return float(value)


def spec_augment(
    features: torch.Tensor,
    freq_mask_param: int = 24,
    time_mask_param: int = 96,
    num_freq_masks: int = 1,
    num_time_masks: int = 1,
    mask_value: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment masks on ``[B, C, T, F]``: per item, bands of width ~U[0, param] set to ``mask_value``.

    Frequency masks cover whole columns of F, time masks whole rows of T, across all channels
    (AudioMAE's fine-tuning uses widths 48/192 of 128/1024). On normalised features pass
    ``mask_value=spec_augment_fill_value(transform)`` to mask as AudioMAE does (before its
    normalisation). Returns a new tensor.
    """
    if features.dim() != 4:
        raise ValueError(
            f"spec_augment expects [B, C, T, F] features, got shape {tuple(features.shape)}"
        )
    batch, _, frames, bins = features.shape
    keep = torch.ones(batch, frames, bins, dtype=torch.bool, device=features.device)
    for axis, size, param, count in (
        (2, bins, freq_mask_param, num_freq_masks),
        (1, frames, time_mask_param, num_time_masks),
    ):
        if param <= 0 or count <= 0:
            continue
        position = torch.arange(size, device=features.device)
        for _ in range(count):
            width = (
                _uniform((batch,), features, generator) * (min(param, size) + 1)
            ).floor()
            start = (
                _uniform((batch,), features, generator) * (size - width + 1)
            ).floor()
            inside = (position[None] >= start[:, None]) & (
                position[None] < (start + width)[:, None]
            )  # [B, size]
            keep &= ~(inside[:, None, :] if axis == 2 else inside[:, :, None])
    return torch.where(keep[:, None], features, torch.full_like(features, mask_value))


class SpecAugment(nn.Module):
    """``spec_augment`` as a module that is active only in ``train()`` mode.

    ``mask_value``: what masked bins hold (``spec_augment_fill_value(transform)`` on a
    transform's normalised output).
    """

    def __init__(
        self,
        freq_mask_param: int = 24,
        time_mask_param: int = 96,
        num_freq_masks: int = 1,
        num_time_masks: int = 1,
        mask_value: float = 0.0,
    ) -> None:
        super().__init__()
        self.freq_mask_param = freq_mask_param
        self.time_mask_param = time_mask_param
        self.num_freq_masks = num_freq_masks
        self.num_time_masks = num_time_masks
        self.mask_value = mask_value

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return features
        return spec_augment(
            features,
            self.freq_mask_param,
            self.time_mask_param,
            self.num_freq_masks,
            self.num_time_masks,
            self.mask_value,
        )


def mixup(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    alpha: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each item with a random partner: ``x = lam x_i + (1 - lam) x_j``, λ ~ Beta(α, α) per item.

    Works on waveforms ``[B, N]`` or features ``[B, C, T, F]``. ``labels`` are class indices
    ``[B]`` or soft targets ``[B, K]``; returns ``(mixed inputs, soft targets [B, K])`` for a
    soft-target cross-entropy. ``alpha <= 0`` returns the inputs with one-hot targets.
    """
    if labels.dim() == 1:
        targets = torch.nn.functional.one_hot(labels.long(), num_classes).to(
            inputs.dtype if inputs.is_floating_point() else torch.float32
        )
    else:
        targets = labels.to(torch.float32)
    if alpha <= 0:
        return inputs, targets
    batch = inputs.shape[0]
    perm_device = generator.device if generator is not None else inputs.device
    partner = torch.randperm(batch, generator=generator, device=perm_device).to(
        inputs.device
    )
    # Beta draws through Python's RNG seeded from the torch generator: torch's Beta sampler
    # takes no generator, and B draws per step cost microseconds
    seed = int(
        torch.randint(0, 2**62, (1,), generator=generator, device=perm_device).item()
    )
    rng = random.Random(seed)
    lam = torch.tensor(
        [rng.betavariate(alpha, alpha) for _ in range(batch)], device=inputs.device
    )
    lam_x = lam.view(batch, *([1] * (inputs.dim() - 1))).to(inputs.dtype)
    mixed = lam_x * inputs + (1 - lam_x) * inputs[partner]
    lam_y = lam.view(batch, 1).to(targets.dtype)
    return mixed, lam_y * targets + (1 - lam_y) * targets[partner]


def random_gain(
    waveforms: torch.Tensor,
    min_db: float = -6.0,
    max_db: float = 6.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scale each item by a gain drawn uniformly in decibels from ``[min_db, max_db]``."""
    if min_db > max_db:
        raise ValueError(
            f"random_gain: min_db ({min_db}) must not exceed max_db ({max_db})"
        )
    batch = waveforms.shape[0]
    db = min_db + (max_db - min_db) * _uniform((batch,), waveforms, generator)
    gain = torch.pow(10.0, db / 20.0).to(waveforms.dtype)
    return waveforms * gain.view(batch, *([1] * (waveforms.dim() - 1)))


def random_roll(
    signals: torch.Tensor,
    dim: int = -1,
    max_shift: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Circularly roll each item along ``dim`` by its own shift in ``[-max_shift, max_shift]``.

    ``dim=-1`` rolls waveforms ``[B, N]`` (or IQ ``[B, 2, L]``) in time; ``dim=2`` rolls
    features ``[B, C, T, F]`` along T. ``max_shift=None`` allows any shift. Unlike the
    official AudioMAE ``_roll_mag_aug`` (whose result is discarded), this really moves samples.
    """
    dim = dim % signals.dim()
    if dim == 0:
        raise ValueError(
            "random_roll: dim 0 is the batch axis; roll along time (dim=-1 or dim=2)"
        )
    batch, length = signals.shape[0], signals.shape[dim]
    limit = length - 1 if max_shift is None else min(max_shift, length - 1)
    shift = (
        _uniform((batch,), signals, generator) * (2 * limit + 1)
    ).floor().long() - limit
    source = (
        torch.arange(length, device=signals.device)[None] - shift[:, None]
    ) % length  # [B, length]
    view = [batch] + [1] * (signals.dim() - 1)
    view[dim] = length
    index = source.view(view).expand_as(signals)
    return torch.gather(signals, dim, index)


__all__ = [
    "SpecAugment",
    "mixup",
    "random_gain",
    "random_roll",
    "spec_augment",
    "spec_augment_fill_value",
]
