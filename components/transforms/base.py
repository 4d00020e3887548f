"""The transform interface: a batch of raw signals in, a batch of 2-D feature maps out.

A transform is an ``nn.Module`` so it moves with ``.to(device)`` and runs on the training
device, batched: the data loader hands over raw waveforms (or IQ frames) and the features are
computed where the model is. ``train()``/``eval()`` select random vs. centre cropping where a
transform crops.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

WindowStart = Literal["random", "centre", "start"]
ShortClip = Literal["tile", "pad"]


def working_dtype(batch: torch.Tensor) -> torch.dtype:
    """The dtype a front end computes in: float64 stays float64 (reference comparisons), every
    other float (float32, float16, bfloat16) is computed in float32."""
    return batch.dtype if batch.dtype == torch.float64 else torch.float32


def require_positive(component: str, **settings: int | float | None) -> None:
    """Reject the first setting that is zero or negative (``None`` means unset), naming it."""
    for name, value in settings.items():
        if value is not None and value <= 0:
            raise ValueError(f"{component}: {name} must be positive, got {value}")


def window_index(
    valid: torch.Tensor, target: int, start: WindowStart, short: ShortClip
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame indices ``[B, target]`` of one window per item, and which of them hold audio.

    ``valid[b]`` is item b's number of frames computed from real samples (the rest of the
    batch's time axis is padding). An item with at least ``target`` frames gets a window
    inside them: a random offset (one draw per item from torch's global RNG), the centred
    one, or the first. A shorter item is tiled (its frames repeated) or padded at the end
    (the second tensor is False there), so no window is ever pure padding for a clip with
    audio.
    """
    valid = valid.to(torch.long)
    positions = torch.arange(target, device=valid.device)
    spare = (valid - target).clamp(min=0)
    if start == "random":
        draws = torch.rand(valid.shape[0], device=valid.device)
        offsets = (draws * (spare + 1).to(draws.dtype)).long().minimum(spare)
    elif start == "centre":
        offsets = spare // 2
    else:
        offsets = torch.zeros_like(spare)
    index = offsets[:, None] + positions[None, :]
    real = torch.ones_like(index, dtype=torch.bool)
    shorter = (valid < target)[:, None]
    frames = valid.clamp(min=1)[:, None]
    if short == "tile":
        index = torch.where(shorter, positions[None, :] % frames, index)
    else:
        real = ~shorter | (positions[None, :] < valid[:, None])
        index = torch.where(shorter, positions[None, :].minimum(frames - 1), index)
    return index, real


def gather_windows(
    features: torch.Tensor,
    index: torch.Tensor,
    real: torch.Tensor,
    pad_value: float = 0.0,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """``features[rows[w], :, index[w], :]`` for ``[B, C, T, F]`` features (``rows`` default:
    one window per item); frames not ``real`` become ``pad_value``. Gathers only the window
    frames, never a copy of a whole clip per window."""
    index = index.to(features.device)
    if rows is None:
        rows = torch.arange(features.shape[0], device=features.device)
    gathered = features[
        rows.to(features.device)[:, None], :, index
    ]  # [W, target, C, F]
    gathered = gathered.permute(0, 2, 1, 3)
    if bool(real.all()):
        return gathered
    keep = real.to(features.device)[:, None, :, None]
    return torch.where(keep, gathered, torch.full_like(gathered, pad_value))


def fit_windows(
    features: torch.Tensor,
    valid: torch.Tensor | None,
    target: int,
    start: WindowStart,
    short: ShortClip,
    pad_value: float = 0.0,
) -> torch.Tensor:
    """One ``target``-frame window per item of ``[B, C, T, F]`` (see ``window_index``).

    ``valid=None`` means every item fills the whole time axis.
    """
    if valid is None:
        valid = torch.full((features.shape[0],), features.shape[2], dtype=torch.long)
    index, real = window_index(valid.to(features.device), target, start, short)
    return gather_windows(features, index, real, pad_value)


def cover_windows(
    features: torch.Tensor,
    valid: torch.Tensor | None,
    target: int,
    short: ShortClip,
    pad_value: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows that together cover each item's frames, and the item each window belongs to.

    An item of ``v`` frames gets ``ceil(v / target)`` windows starting every ``target``
    frames, the last one moved back to end at the item's last frame (so it holds no
    padding); an item shorter than one window gets one, tiled or padded. Used for
    embeddings of long clips, which average over the windows (as AudioMAE++'s HEAR runtime
    averages its 200-frame chunks).
    """
    if valid is None:
        valid = torch.full((features.shape[0],), features.shape[2], dtype=torch.long)
    owners: list[int] = []
    starts: list[int] = []
    for item, frames in enumerate(valid.tolist()):
        count = max(1, math.ceil(frames / target))
        for k in range(count):
            owners.append(item)
            starts.append(max(0, min(k * target, frames - target)))
    owner = torch.tensor(owners, dtype=torch.long, device=features.device)
    item_valid = valid.to(features.device)[owner]
    offsets = torch.tensor(starts, dtype=torch.long, device=features.device)
    positions = torch.arange(target, device=features.device)
    index, real = window_index(item_valid, target, "start", short)
    long_enough = (item_valid >= target)[:, None]
    index = torch.where(long_enough, offsets[:, None] + positions[None, :], index)
    return gather_windows(features, index, real, pad_value, rows=owner), owner


def full_frames(features: torch.Tensor) -> torch.Tensor:
    """Frame counts ``[B]`` of ``[B, C, T, F]`` features whose every frame is the clip's own."""
    return torch.full((features.shape[0],), features.shape[2], dtype=torch.long)


def mean_by_owner(
    values: torch.Tensor, owner: torch.Tensor, items: int
) -> torch.Tensor:
    """Row means of ``values [W, ...]`` grouped by ``owner [W]`` into ``[items, ...]``."""
    total = torch.zeros(
        (items, *values.shape[1:]), dtype=values.dtype, device=values.device
    )
    total.index_add_(0, owner.to(values.device), values)
    counts = torch.bincount(owner.to(values.device), minlength=items).clamp(min=1)
    return total / counts.view(-1, *([1] * (values.dim() - 1))).to(values.dtype)


class SignalTransform(nn.Module):
    """Base class of every registered transform.

    ``forward(batch)`` maps audio ``[B, N]`` or IQ ``[B, 2, L]`` float tensors to features
    ``[B, C, T, F]``. ``output_shape(num_samples)`` gives ``(C, T, F)`` without computing, so a
    model can be sized before any data is read.
    """

    input_kind: Literal["audio", "iq"] = "audio"
    sample_rate: int | None = None
    # the shortest input (samples per channel) that yields at least one output frame
    min_num_samples: int = 1
    # Its registry name, kept where there is no registry (the emitted script): precomputed
    # features record it, and are checked against it. Set by transforms with ``features()``.
    registered_name: str | None = None
    # Settings that act only after ``features()`` (window, normalisation): precomputed
    # features stay valid when they change.
    post_feature_settings: tuple[str, ...] = ()

    def forward(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward(batch, lengths=None)"
        )

    def windows(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature windows covering each whole clip, and the clip ``[W]`` each belongs to.

        Evaluation-time: an embedding of a long clip is the mean over its windows. A
        transform whose output has no time window to slide gives one window per clip.
        """
        features = self(batch, lengths)
        return features, torch.arange(features.shape[0], device=features.device)

    # Precomputed features: ``forward`` = ``from_features(*features(batch, lengths))`` and
    # ``windows`` = ``windows_from_features(*features(batch, lengths))``, so a features step
    # can store ``features()`` once and training runs only the rest, with the same code.
    def features(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-length features ``[B, C, T, F]`` and each clip's frame count ``[B]``.

        The part of ``forward`` that depends only on the signal: no window, no
        normalisation, nothing that ``train()``/``eval()`` changes.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot precompute its features (it has no features() /"
            " from_features() split)"
        )

    def from_features(
        self, features: torch.Tensor, frames: torch.Tensor
    ) -> torch.Tensor:  # pragma: no cover - interface
        """What ``forward`` does after ``features()``: the model's window, normalisation."""
        raise NotImplementedError(f"{type(self).__name__} has no from_features()")

    def windows_from_features(
        self, features: torch.Tensor, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What ``windows`` does after ``features()``."""
        out = self.from_features(features, frames)
        return out, torch.arange(out.shape[0], device=out.device)

    def padded_share_of_frames(self, frames: torch.Tensor) -> float:
        """``padded_share`` for clips of ``frames`` feature frames."""
        return 0.0

    def padded_share(self, lengths: torch.Tensor) -> float:
        """Share of the model's windows that is padding rather than audio, for clips of
        ``lengths`` samples (0 for transforms that tile short clips or have no window).
        """
        return 0.0

    def output_shape(
        self, num_samples: int
    ) -> tuple[int, int, int]:  # pragma: no cover - interface
        raise NotImplementedError(
            f"{type(self).__name__} must implement output_shape(num_samples)"
        )

    def check_input(self, batch: torch.Tensor) -> None:
        """Raise a clear error when ``batch`` does not have this transform's input layout."""
        if not isinstance(batch, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__} expects a torch.Tensor, got {type(batch).__name__}"
            )
        if not batch.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} expects a floating-point tensor, got {batch.dtype}"
            )
        if self.input_kind == "audio" and batch.dim() != 2:
            raise ValueError(
                f"{type(self).__name__} expects audio as [B, N] waveforms, got shape {tuple(batch.shape)};"
                " add a batch dimension with x.unsqueeze(0) or average channels first"
            )
        if self.input_kind == "iq" and (batch.dim() != 3 or batch.shape[1] != 2):
            raise ValueError(
                f"{type(self).__name__} expects IQ as [B, 2, L] (I and Q channels), got shape {tuple(batch.shape)}"
            )


class FeatureTransform(SignalTransform):
    """A transform split in two: ``features`` (what depends only on the signal) and
    ``from_features`` / ``windows_from_features`` (the model's window, normalisation).

    ``forward`` and ``windows`` are the compositions, so features stored once by a
    features step and the waveform path run the same code.
    """

    def forward(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.from_features(*self.features(batch, lengths))

    def windows(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.windows_from_features(*self.features(batch, lengths))


__all__ = [
    "FeatureTransform",
    "ShortClip",
    "SignalTransform",
    "WindowStart",
    "cover_windows",
    "fit_windows",
    "full_frames",
    "gather_windows",
    "mean_by_owner",
    "require_positive",
    "window_index",
    "working_dtype",
]
