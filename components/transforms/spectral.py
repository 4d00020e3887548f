"""STFT front ends: AudioMAE++'s log-mel spectrogram and the RadioML IQ spectrogram.

Both run batched on the training device with windows and filter banks cached per
(device, dtype), and both fit the time axis to a fixed number of frames so a ViT sees a
constant grid: random crops in ``train()``, centre crops in ``eval()``, tiling for short clips
(a clip is never padded with silence that was not in it).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch

from components.registry import transform_registry
from components.transforms.base import (
    FeatureTransform,
    SignalTransform,
    cover_windows,
    fit_windows,
    full_frames,
    require_positive,
    working_dtype,
)


def htk_mel(freq: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + freq / 700.0)


def htk_mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=32)
def htk_mel_filters(
    n_fft: int,
    n_mels: int,
    sample_rate: int,
    f_min: float,
    f_max: float,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Triangular HTK-mel filters ``[n_fft // 2 + 1, n_mels]`` (no area normalisation)."""
    bin_freqs = torch.linspace(
        0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64
    )
    edges = htk_mel_to_hz(
        torch.linspace(
            float(htk_mel(torch.tensor(f_min))),
            float(htk_mel(torch.tensor(f_max))),
            n_mels + 2,
            dtype=torch.float64,
        )
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    f = bin_freqs.unsqueeze(1)
    rising = (f - lower) / (center - lower)
    falling = (upper - f) / (upper - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(
        device=device, dtype=dtype
    )


@functools.lru_cache(maxsize=32)
def periodic_hann(
    length: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    return torch.hann_window(length, periodic=True, dtype=dtype, device=device)


def stft_output_frames(
    num_samples: int | torch.Tensor, hop_length: int, target_frames: int | None
) -> int | torch.Tensor:
    """Frames out of a centred STFT (``1 + N // hop``, also per clip of a lengths tensor), or
    ``target_frames`` when the time axis is fitted."""
    return 1 + num_samples // hop_length if target_frames is None else target_frames


def standardize_per_item(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    dims = tuple(range(1, features.dim()))
    mean = features.mean(dim=dims, keepdim=True)
    std = features.std(dim=dims, keepdim=True, unbiased=False)
    return (features - mean) / (std + eps)


@transform_registry.register("log_mel", version="1.0")
class LogMel(FeatureTransform):
    """AudioMAE++'s front end: ``[B, N]`` -> ``[B, 1, target_frames, n_mels]`` standardised log-mels.

    Centred STFT (reflect padding) with a periodic Hann window, power spectrum, HTK mel
    filters from ``f_min`` to ``f_max`` (capped at Nyquist), ``log(x + log_offset)``, crop
    (random in training, centre in evaluation) or tile to ``target_frames``, then per-clip
    standardisation (``standardize=False`` keeps raw log-mels). ``target_frames=None`` keeps
    every frame.

    Args:
        sample_rate: Sample rate in Hz of the incoming waveforms; must match the data
            set's.
        n_fft: FFT size in samples (400 = 25 ms at 16 kHz); gives n_fft // 2 + 1
            frequency bins before the mel filters.
        win_length: Hann window length in samples (at most n_fft).
        hop_length: Hop between frames in samples (160 = 10 ms at 16 kHz).
        n_mels: Number of mel filters (the feature's frequency bins); must match the
            model's img_size[1].
        f_min: Lowest mel filter edge in Hz.
        f_max: Highest mel filter edge in Hz (capped at Nyquist).
        target_frames: Frames of one window: longer clips are cropped (random in
            training, centre in evaluation), shorter ones tiled; None keeps every frame.
        log_offset: Added to the mel power before the log so silence stays finite.
        standardize: Standardise each clip's log-mels to zero mean and unit variance;
            False keeps raw log-mels.
    """

    input_kind = "audio"
    registered_name = "log_mel"
    post_feature_settings = ("target_frames", "standardize")

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 80,
        f_min: float = 50.0,
        f_max: float = 8000.0,
        target_frames: int | None = 200,
        log_offset: float = 1e-6,
        standardize: bool = True,
    ) -> None:
        super().__init__()
        require_positive(
            "log_mel",
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            n_mels=n_mels,
            target_frames=target_frames,
        )
        if win_length > n_fft:
            raise ValueError(
                f"log_mel: win_length ({win_length}) must not exceed n_fft ({n_fft})"
            )
        if not 0 <= f_min < min(f_max, sample_rate / 2):
            raise ValueError(
                f"log_mel: need 0 <= f_min < f_max, f_min below Nyquist; got {f_min}, {f_max} at {sample_rate} Hz"
            )
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = min(f_max, sample_rate / 2)
        self.target_frames = target_frames
        self.log_offset = log_offset
        self.standardize = standardize
        self.min_num_samples = (
            n_fft // 2 + 1
        )  # reflect padding needs more samples than it pads

    def output_shape(self, num_samples: int) -> tuple[int, int, int]:
        frames = stft_output_frames(num_samples, self.hop_length, self.target_frames)
        return (1, frames, self.n_mels)

    def valid_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames centred on real samples of clips ``lengths`` long (a centred STFT's count)."""
        return stft_output_frames(lengths.to(torch.long), self.hop_length, None)

    def log_mels(self, batch: torch.Tensor) -> torch.Tensor:
        """Every frame's log-mel ``[B, 1, T, n_mels]``, before windowing and standardisation."""
        self.check_input(batch)
        if batch.shape[1] < self.min_num_samples:
            raise ValueError(
                f"log_mel: {batch.shape[1]} samples is too short for n_fft={self.n_fft}; need at least {self.min_num_samples}"
            )
        dtype = working_dtype(batch)
        batch = batch.to(dtype)
        spec = torch.stft(
            batch,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=periodic_hann(self.win_length, batch.device, dtype),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # [B, n_fft // 2 + 1, T]
        power = spec.real.square() + spec.imag.square()
        filters = htk_mel_filters(
            self.n_fft,
            self.n_mels,
            self.sample_rate,
            self.f_min,
            self.f_max,
            batch.device,
            dtype,
        )
        return torch.log(power.transpose(1, 2) @ filters + self.log_offset).unsqueeze(1)

    def finish(self, mel: torch.Tensor) -> torch.Tensor:
        return standardize_per_item(mel) if self.standardize else mel

    def log_mels_of_clips(
        self, batch: torch.Tensor, lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """``log_mels`` of each clip without its padding (the last frames' reflect padding
        must see the clip's own end), frames then zero-padded to the longest clip's."""
        if lengths is None or bool((lengths == batch.shape[1]).all()):
            return self.log_mels(batch)
        self.check_input(batch)
        frames = int(self.valid_frames(lengths).max())
        mel = batch.new_zeros(
            (batch.shape[0], 1, frames, self.n_mels), dtype=working_dtype(batch)
        )
        for length in sorted(set(lengths.tolist())):
            items = (lengths == length).nonzero().flatten().to(batch.device)
            part = batch[items, :length]
            if length < self.min_num_samples:  # too short to reflect-pad: tile it first
                part = part.repeat(1, -(-self.min_num_samples // max(1, length)))
                part = part[:, : self.min_num_samples]
            part = self.log_mels(part)[
                :, :, : stft_output_frames(length, self.hop_length, None)
            ]
            mel[items, :, : part.shape[2]] = part
        return mel

    def features(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self.log_mels_of_clips(batch, lengths)
        return mel, full_frames(mel) if lengths is None else self.valid_frames(lengths)

    def from_features(self, mel: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        if self.target_frames is None:
            return self.finish(mel)
        start = "random" if self.training else "centre"
        return self.finish(fit_windows(mel, frames, self.target_frames, start, "tile"))

    def windows_from_features(
        self, mel: torch.Tensor, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.target_frames is None:
            return super().windows_from_features(mel, frames)
        features, owner = cover_windows(mel, frames, self.target_frames, "tile")
        return self.finish(features), owner


@transform_registry.register("iq_spectrogram", version="1.0")
class IQSpectrogram(FeatureTransform):
    """RadioML front end: ``[B, 2, L]`` IQ -> ``[B, C, T, n_fft]`` two-sided spectrogram.

    The STFT of ``I + jQ`` is two-sided (a complex signal's negative frequencies differ from
    its positive ones), ``fftshift`` ed so that DC sits in the middle. ``mode`` picks channels:
    ``"log_magnitude"`` (C=1), ``"log_magnitude_phase"`` (C=2, phase / pi), ``"real_imag"``
    (C=2, signed-log of real and imaginary parts). Default sizes suit RML2016's 128-sample
    frames (33 frames of 32 bins, cropped to 32); for RML2018's 1024 samples use e.g.
    ``n_fft=64, hop_length=16, target_frames=64``.

    Args:
        n_fft: FFT size in samples; the two-sided spectrogram has n_fft frequency bins.
        hop_length: Hop between STFT frames in samples.
        mode: Channels: `log_magnitude` (1), `log_magnitude_phase` (2, phase / pi) or
            `real_imag` (2, signed log of the real and imaginary parts).
        target_frames: Frames of one window (cropped or tiled to it); None keeps every
            frame. 32 suits RML2016's 128-sample frames.
        standardize: Standardise each item's log-magnitude channel to zero mean and unit
            variance.
        log_offset: Added to the magnitude before the log so zero bins stay finite.
    """

    input_kind = "iq"
    registered_name = "iq_spectrogram"
    post_feature_settings = ("target_frames", "standardize")

    def __init__(
        self,
        n_fft: int = 32,
        hop_length: int = 4,
        mode: Literal[
            "log_magnitude", "log_magnitude_phase", "real_imag"
        ] = "log_magnitude",
        target_frames: int | None = 32,
        standardize: bool = True,
        log_offset: float = 1e-6,
    ) -> None:
        super().__init__()
        require_positive(
            "iq_spectrogram",
            n_fft=n_fft,
            hop_length=hop_length,
            target_frames=target_frames,
        )
        if mode not in ("log_magnitude", "log_magnitude_phase", "real_imag"):
            raise ValueError(
                f"iq_spectrogram: mode must be log_magnitude, log_magnitude_phase or real_imag, got {mode!r}"
            )
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.mode = mode
        self.target_frames = target_frames
        self.standardize = standardize
        self.log_offset = log_offset
        self.min_num_samples = n_fft // 2 + 1

    @property
    def channels(self) -> int:
        return 1 if self.mode == "log_magnitude" else 2

    def output_shape(self, num_samples: int) -> tuple[int, int, int]:
        frames = stft_output_frames(num_samples, self.hop_length, self.target_frames)
        return (self.channels, frames, self.n_fft)

    def features(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(batch)
        if batch.shape[2] < self.min_num_samples:
            raise ValueError(
                f"iq_spectrogram: {batch.shape[2]} samples is too short for n_fft={self.n_fft}"
            )
        dtype = working_dtype(batch)
        batch = batch.to(dtype)
        signal = torch.complex(batch[:, 0], batch[:, 1])
        spec = torch.stft(
            signal,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=periodic_hann(self.n_fft, batch.device, dtype),
            center=True,
            pad_mode="reflect",
            return_complex=True,
            onesided=False,
        )
        spec = torch.fft.fftshift(spec, dim=1).transpose(1, 2)  # [B, T, n_fft]
        log_magnitude = torch.log(spec.abs() + self.log_offset)
        if self.mode == "log_magnitude":
            channels = [log_magnitude]
        elif self.mode == "log_magnitude_phase":
            channels = [log_magnitude, torch.angle(spec) / math.pi]
        else:  # a signed log keeps the sign and tames the dynamic range
            channels = [
                torch.sign(part) * torch.log1p(part.abs())
                for part in (spec.real, spec.imag)
            ]
        features = torch.stack(channels, dim=1)
        if lengths is None:
            return features, full_frames(features)
        return features, stft_output_frames(
            lengths.to(torch.long), self.hop_length, None
        )

    def from_features(
        self, features: torch.Tensor, frames: torch.Tensor
    ) -> torch.Tensor:
        if self.target_frames is not None:
            start = "random" if self.training else "centre"
            features = fit_windows(features, frames, self.target_frames, start, "tile")
        if self.standardize and self.mode == "log_magnitude":
            features = standardize_per_item(features)
        elif self.standardize and self.mode == "log_magnitude_phase":
            features = torch.cat(
                [standardize_per_item(features[:, :1]), features[:, 1:]], dim=1
            )
        return features


@transform_registry.register("iq_patches", version="1.0")
class IQPatches(SignalTransform):
    """Raw IQ cut into 1-D patches, for models that read IQ samples directly.

    ``[B, 2, L]`` -> ``layout="rows"``: ``[B, 1, L / P, 2P]`` (each row is a patch's I samples
    then its Q samples, so a ``(1, 2P)`` patch embedding sees one time patch);
    ``layout="channels"``: ``[B, 2, L / P, P]``. A partial last patch is zero-padded.
    ``normalize=True`` scales each item to unit RMS power (RadioML power varies with SNR).

    Args:
        patch_size: Samples per 1-D patch; a partial last patch is zero-padded.
        layout: `rows`: [B, 1, L / P, 2P] (I then Q samples of a patch in one row);
            `channels`: [B, 2, L / P, P] with I and Q as channels.
        normalize: Scale each item to unit RMS power (RadioML power varies with SNR).
    """

    input_kind = "iq"

    def __init__(
        self,
        patch_size: int = 16,
        layout: Literal["rows", "channels"] = "rows",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        require_positive("iq_patches", patch_size=patch_size)
        if layout not in ("rows", "channels"):
            raise ValueError(
                f"iq_patches: layout must be 'rows' or 'channels', got {layout!r}"
            )
        self.patch_size = patch_size
        self.layout = layout
        self.normalize = normalize

    def output_shape(self, num_samples: int) -> tuple[int, int, int]:
        patches = math.ceil(num_samples / self.patch_size)
        if self.layout == "rows":
            return (1, patches, 2 * self.patch_size)
        return (2, patches, self.patch_size)

    def forward(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.check_input(batch)  # RadioML frames all have one length: nothing to window
        dtype = working_dtype(batch)
        batch = batch.to(dtype)
        if self.normalize:
            rms = batch.square().sum(dim=1).mean(dim=1).sqrt()
            batch = batch / (rms[:, None, None] + 1e-8)
        length = batch.shape[2]
        patches = math.ceil(length / self.patch_size)
        batch = torch.nn.functional.pad(batch, (0, patches * self.patch_size - length))
        cut = batch.reshape(batch.shape[0], 2, patches, self.patch_size)  # [B, 2, T, P]
        if self.layout == "channels":
            return cut
        return cut.permute(0, 2, 1, 3).reshape(
            batch.shape[0], 1, patches, 2 * self.patch_size
        )


__all__ = [
    "IQPatches",
    "IQSpectrogram",
    "LogMel",
    "htk_mel_filters",
    "standardize_per_item",
    "stft_output_frames",
]
