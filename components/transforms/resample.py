"""Band-limited resampling in torch: a windowed-sinc polyphase filter with cached kernels.

Rates are reduced by their gcd to ``orig / new`` (44.1 kHz -> 16 kHz is 441 -> 160). Output
sample ``m = k * new + j`` lies at input time ``k * orig + j * orig / new``, so each of the
``new`` output phases is one FIR filter applied with stride ``orig``: a single ``conv1d`` with
``new`` output channels computes them all, and interleaving the channels gives the output.
The filter is a sinc low-pass at ``rolloff * min(orig, new) / 2`` (just under the lower
Nyquist), tapered by a Hann window spanning ``lowpass_filter_width`` zero crossings each side.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=32)
def sinc_resample_kernel(
    orig: int,
    new: int,
    lowpass_filter_width: int,
    rolloff: float,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, int]:
    """The polyphase kernel ``[new, 1, 2 * width + orig]`` and its half-width ``width``.

    ``orig`` and ``new`` are already divided by their gcd. Built in float64, cached per
    (rates, filter, device, dtype).
    """
    cutoff = 0.5 * rolloff * min(orig, new) / orig  # cycles per input sample
    width = math.ceil(lowpass_filter_width / (2.0 * cutoff))  # in input samples
    taps = torch.arange(
        -width, width + orig, dtype=torch.float64
    )  # input offsets around k * orig
    phases = torch.arange(new, dtype=torch.float64).unsqueeze(1) * orig / new
    t = phases - taps  # output time minus input time, [new, taps]
    half_span = lowpass_filter_width / (2.0 * cutoff)
    window = torch.where(
        t.abs() <= half_span, torch.cos(math.pi * t / (2.0 * half_span)) ** 2, 0.0
    )
    kernel = 2.0 * cutoff * torch.sinc(2.0 * cutoff * t) * window
    # conv1d correlates: kernel index i multiplies input sample k * orig + i - width
    return kernel.unsqueeze(1).to(device=device, dtype=dtype), width


def resample(
    waveform: torch.Tensor,
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> torch.Tensor:
    """Resample ``[..., N]`` from ``orig_freq`` to ``new_freq`` Hz along the last axis.

    Returns ``[..., ceil(N * new_freq / orig_freq)]`` in the input's floating dtype. Equal
    rates return the input unchanged.
    """
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(
            f"resample: rates must be positive, got {orig_freq} -> {new_freq} Hz"
        )
    if not waveform.is_floating_point():
        raise TypeError(
            f"resample expects a floating-point waveform, got {waveform.dtype}"
        )
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernel, width = sinc_resample_kernel(
        orig, new, lowpass_filter_width, rolloff, waveform.device, waveform.dtype
    )
    shape = waveform.shape
    flat = waveform.reshape(-1, 1, shape[-1])
    num_samples = shape[-1]
    target = math.ceil(num_samples * new / orig)
    blocks = math.ceil(target / new)  # conv outputs needed per phase
    # left: the filter's past; right: enough zeros for `blocks` strided windows
    right = max(0, (blocks - 1) * orig + kernel.shape[-1] - (num_samples + width))
    padded = F.pad(flat, (width, right))
    phases = F.conv1d(padded, kernel, stride=orig)  # [B, new, blocks]
    out = phases[..., :blocks].transpose(1, 2).reshape(flat.shape[0], -1)[:, :target]
    return out.reshape(*shape[:-1], target)


class Resample(nn.Module):
    """``resample`` as a module (kernels cached per device and dtype)."""

    def __init__(
        self,
        orig_freq: int,
        new_freq: int,
        lowpass_filter_width: int = 6,
        rolloff: float = 0.99,
    ) -> None:
        super().__init__()
        self.orig_freq = orig_freq
        self.new_freq = new_freq
        self.lowpass_filter_width = lowpass_filter_width
        self.rolloff = rolloff

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return resample(
            waveform,
            self.orig_freq,
            self.new_freq,
            self.lowpass_filter_width,
            self.rolloff,
        )


__all__ = ["Resample", "resample", "sinc_resample_kernel"]
