"""kaldi_fbank equals torchaudio's Kaldi fbank (golden values) and follows AudioMAE's padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.registry import transform_registry
from components.transforms.kaldi import KaldiFbank, kaldi_mel_banks

GOLDEN = Path(__file__).parent / "data" / "frontend_kaldi_golden.pt"


def golden_cases() -> dict[str, dict]:
    return torch.load(GOLDEN, weights_only=True)


@pytest.mark.parametrize("name", ["tones_16k", "chirp_44k", "bursts_16k", "tones_22k_80"])
def test_kaldi_fbank_matches_torchaudio_golden_values(name: str) -> None:
    case = golden_cases()[name]
    wave = case["pcm"].to(torch.float32) / 32768.0
    transform = KaldiFbank(
        sample_rate=case["sample_rate"], num_mel_bins=case["num_mel_bins"], target_frames=None, mean=None, std=None
    )
    features = transform(wave.unsqueeze(0))
    assert features.shape == (1, 1, *case["fbank"].shape)
    torch.testing.assert_close(features[0, 0], case["fbank"], atol=1e-3, rtol=0)


def test_kaldi_fbank_batch_of_golden_clips_equals_reference() -> None:
    case = golden_cases()["tones_16k"]
    wave = case["pcm"].to(torch.float32) / 32768.0
    batch = torch.stack([wave, 0.5 * wave, wave.flip(0)])
    out = transform_registry.create("kaldi_fbank", sample_rate=16000, target_frames=None, mean=None, std=None)(batch)
    torch.testing.assert_close(out[0, 0], case["fbank"], atol=1e-3, rtol=0)
    # halving the amplitude lowers every log-energy above the floor by ln 4
    above_floor = case["fbank"] > -10.0
    shifted = case["fbank"] - torch.log(torch.tensor(4.0))
    torch.testing.assert_close(out[1, 0][above_floor], shifted[above_floor], atol=2e-3, rtol=0)


def test_registry_interface_pads_with_zero_frames_before_normalising() -> None:
    case = golden_cases()["tones_16k"]  # 98 frames
    wave = (case["pcm"].to(torch.float32) / 32768.0).unsqueeze(0)
    mean, std = -6.6268077, 5.358466
    transform = transform_registry.create(
        "kaldi_fbank", sample_rate=16000, num_mel_bins=128, target_frames=512, mean=mean, std=std
    )
    out = transform(wave)
    assert out.shape == (1, 1, 512, 128) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, 0, :98], (case["fbank"] - mean) / (2 * std), atol=1e-3, rtol=0)
    torch.testing.assert_close(out[0, 0, 98:], torch.full((414, 128), -mean / (2 * std)))
    assert transform.output_shape(wave.shape[1]) == (1, 512, 128)


def test_evaluation_keeps_the_first_frames_and_training_a_window_of_them() -> None:
    case = golden_cases()["bursts_16k"]
    wave = (case["pcm"].to(torch.float32) / 32768.0).unsqueeze(0)
    transform = KaldiFbank(sample_rate=16000, target_frames=50, mean=None, std=None)
    out = transform.eval()(wave)
    torch.testing.assert_close(out[0, 0], case["fbank"][:50], atol=1e-3, rtol=0)
    frames = case["fbank"].shape[0]
    starts = set()
    for seed in range(8):
        torch.manual_seed(seed)
        window = transform.train()(wave)[0, 0]
        start = min(range(frames - 49), key=lambda s: float((case["fbank"][s : s + 50] - window).abs().max()))
        torch.testing.assert_close(window, case["fbank"][start : start + 50], atol=1e-3, rtol=0)
        starts.add(start)
    assert len(starts) > 1  # random windows, not always the first


def test_mean_is_removed_per_clip() -> None:
    case = golden_cases()["tones_16k"]
    wave = (case["pcm"].to(torch.float32) / 32768.0).unsqueeze(0)
    transform = KaldiFbank(sample_rate=16000, target_frames=None, mean=None, std=None)
    torch.testing.assert_close(transform(wave - 0.3)[0, 0], case["fbank"], atol=1e-3, rtol=0)


def test_filter_banks_are_cached_per_rate_device_and_dtype() -> None:
    args = (128, 512, 16000.0, 20.0, 0.0, torch.device("cpu"))
    assert kaldi_mel_banks(*args, torch.float32) is kaldi_mel_banks(*args, torch.float32)
    assert kaldi_mel_banks(*args, torch.float64).dtype == torch.float64


def test_clear_errors_for_bad_input() -> None:
    transform = KaldiFbank(sample_rate=16000, target_frames=None)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        transform(torch.zeros(2, 1, 16000))
    with pytest.raises(ValueError, match="shorter than one 25 ms frame"):
        transform(torch.zeros(1, 100))
    with pytest.raises(TypeError, match="floating-point"):
        transform(torch.zeros(1, 16000, dtype=torch.int16))
    with pytest.raises(ValueError, match="high_freq"):
        KaldiFbank(sample_rate=16000, high_freq=9000.0)(torch.zeros(1, 16000))


@pytest.mark.parametrize("frames", [{"frame_shift_ms": 0.0}, {"frame_length_ms": 0.01}, {"frame_shift_ms": -10.0}])
def test_frames_shorter_than_a_sample_are_a_clear_error_at_construction(frames: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        KaldiFbank(sample_rate=16000, **frames)


@pytest.mark.parametrize("band", [{"high_freq": 9000.0}, {"low_freq": 8000.0}, {"low_freq": 500.0, "high_freq": 400.0}])
def test_a_band_beyond_nyquist_or_inverted_fails_at_construction(band: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="low_freq < high_freq <= Nyquist"):
        KaldiFbank(sample_rate=16000, **band)
