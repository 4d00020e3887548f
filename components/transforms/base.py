"""The transform interface: a batch of raw signals in, a batch of 2-D feature maps out.

A transform is an ``nn.Module`` so it moves with ``.to(device)`` and runs on the training
device, batched: the data loader hands over raw waveforms (or IQ frames) and the features are
computed where the model is. ``train()``/``eval()`` select random vs. centre cropping where a
transform crops.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


def working_dtype(batch: torch.Tensor) -> torch.dtype:
    """The dtype a front end computes in: float64 stays float64 (reference comparisons), every
    other float (float32, float16, bfloat16) is computed in float32."""
    return batch.dtype if batch.dtype == torch.float64 else torch.float32


def require_positive(component: str, **settings: int | float | None) -> None:
    """Reject the first setting that is zero or negative (``None`` means unset), naming it."""
    for name, value in settings.items():
        if value is not None and value <= 0:
            raise ValueError(f"{component}: {name} must be positive, got {value}")


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

    def forward(
        self, batch: torch.Tensor
    ) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward(batch)"
        )

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


__all__ = ["SignalTransform", "require_positive", "working_dtype"]
