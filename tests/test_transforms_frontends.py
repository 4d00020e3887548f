"""Resampling, log-mel, IQ front ends and augmentation: properties a user relies on."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.registry import transform_registry
from components.transforms import (
    IQPatches,
    IQSpectrogram,
    LogMel,
    mixup,
    random_gain,
    random_roll,
    resample,
    spec_augment,
)
from components.transforms.resample import sinc_resample_kernel


def tone(freq: float, rate: int, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return torch.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize(("orig", "new"), [(44100, 16000), (16000, 44100), (48000, 16000), (22050, 16000)])
def test_resample_keeps_a_tone_below_the_new_nyquist(orig: int, new: int) -> None:
    out = resample(tone(1000.0, orig), orig, new)
    expected = tone(1000.0, new)
    assert out.shape[-1] == math.ceil(tone(1000.0, orig).shape[-1] * new / orig)
    inner = slice(100, expected.shape[-1] - 100)  # away from the zero-padded edges
    torch.testing.assert_close(out[inner], expected[: out.shape[-1]][inner], atol=5e-3, rtol=0)


def test_resample_removes_a_tone_above_the_new_nyquist() -> None:
    out = resample(tone(11000.0, 44100).float(), 44100, 16000)
    assert out[100:-100].abs().max() < 0.01


def test_resample_batches_and_caches_kernels() -> None:
    batch = torch.stack([tone(440.0, 44100), tone(880.0, 44100)]).float()
    out = resample(batch, 44100, 16000)
    torch.testing.assert_close(out[1], resample(batch[1], 44100, 16000))
    args = (441, 160, 6, 0.99, torch.device("cpu"), torch.float32)
    assert sinc_resample_kernel(*args) is sinc_resample_kernel(*args)
    assert resample(batch, 16000, 16000) is batch


def test_log_mel_is_audiomae_plus_plus_shaped_and_standardised() -> None:
    transform = transform_registry.create("log_mel").eval()
    out = transform(torch.randn(2, 16000 * 3, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, 1, 200, 80) == (2, *transform.output_shape(48000))
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=(1, 2, 3), unbiased=False), torch.ones(2), atol=1e-3, rtol=0)


def test_log_mel_puts_a_tone_in_the_right_mel_band() -> None:
    transform = LogMel(target_frames=None, standardize=False)
    low, high = (transform(tone(f, 16000).float().unsqueeze(0))[0, 0].mean(0).argmax() for f in (300.0, 4000.0))
    assert low < high


def test_log_mel_crops_at_random_in_training_and_centrally_in_evaluation() -> None:
    transform = LogMel(target_frames=20, standardize=False)
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    full = LogMel(target_frames=None, standardize=False)(wave)
    centre = transform.eval()(wave)
    start = (full.shape[2] - 20) // 2
    torch.testing.assert_close(centre, full[:, :, start : start + 20])
    torch.manual_seed(0)
    crops = {tuple(transform.train()(wave)[0, 0, 0, :3].tolist()) for _ in range(8)}
    assert len(crops) > 1


def test_log_mel_tiles_short_clips() -> None:
    transform = LogMel(target_frames=200, standardize=False).eval()
    out = transform(torch.randn(1, 3200))  # 21 frames
    torch.testing.assert_close(out[0, 0, 21:42], out[0, 0, :21])


def test_iq_spectrogram_places_a_complex_tone_on_its_signed_frequency() -> None:
    n = torch.arange(128, dtype=torch.float32)
    for cycles, expected_bin in ((-0.25, 8), (0.25, 24)):  # fftshifted: bin 16 is DC for n_fft 32
        iq = torch.stack([torch.cos(2 * math.pi * cycles * n), torch.sin(2 * math.pi * cycles * n)]).unsqueeze(0)
        out = IQSpectrogram(standardize=False).eval()(iq)
        assert out.shape == (1, 1, 32, 32)
        assert int(out[0, 0, 16].argmax()) == expected_bin


@pytest.mark.parametrize("mode", ["log_magnitude", "log_magnitude_phase", "real_imag"])
def test_iq_spectrogram_modes_give_their_channels(mode: str) -> None:
    transform = IQSpectrogram(n_fft=64, hop_length=16, target_frames=64, mode=mode).eval()
    out = transform(torch.randn(3, 2, 1024))
    assert out.shape == (3, *transform.output_shape(1024)) == (3, 1 if mode == "log_magnitude" else 2, 64, 64)
    assert torch.isfinite(out).all()


def test_iq_patches_keep_samples_in_order() -> None:
    iq = torch.arange(2 * 40, dtype=torch.float32).view(1, 2, 40)
    rows = IQPatches(patch_size=8, normalize=False)(iq)
    assert rows.shape == (1, 1, 5, 16)
    torch.testing.assert_close(rows[0, 0, 1], torch.cat([iq[0, 0, 8:16], iq[0, 1, 8:16]]))
    channels = IQPatches(patch_size=16, layout="channels", normalize=False)(iq)
    assert channels.shape == (1, 2, 3, 16) and channels[0, 0, 2, 8:].eq(0).all()  # zero-padded tail


@given(batch=st.integers(1, 4), seed=st.integers(0, 2**16))
@settings(deadline=None)
def test_spec_augment_masks_whole_bands_within_the_limits(batch: int, seed: int) -> None:
    features = torch.ones(batch, 2, 40, 16)
    out = spec_augment(features, freq_mask_param=5, time_mask_param=7, generator=torch.Generator().manual_seed(seed))
    masked = out == 0
    assert masked[:, 0].eq(masked[:, 1]).all()  # same mask on every channel
    for item in masked[:, 0]:
        full_cols = item.all(dim=0).sum()  # frequency bands masked over all time
        full_rows = item.all(dim=1).sum()
        assert full_cols <= 5 and full_rows <= 7
        assert item.eq(item.all(dim=0, keepdim=True) | item.all(dim=1, keepdim=True)).all()


def test_mixup_mixes_inputs_and_targets_with_the_same_weights() -> None:
    inputs = torch.eye(4).repeat_interleave(3, dim=1)  # item i is constant 1 on its own block
    mixed, targets = mixup(inputs, torch.arange(4), num_classes=4, alpha=0.4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    torch.testing.assert_close(mixed[:, ::3], targets)
    same, onehot = mixup(inputs, torch.arange(4), num_classes=4, alpha=0.0)
    assert same is inputs and onehot.eq(torch.eye(4)).all()


def test_random_gain_stays_within_its_decibel_range() -> None:
    out = random_gain(torch.ones(64, 10), min_db=-6.0, max_db=3.0, generator=torch.Generator().manual_seed(0))
    db = 20 * torch.log10(out[:, 0])
    assert db.min() >= -6.0 - 1e-4 and db.max() <= 3.0 + 1e-4 and db.std() > 1.0


@given(length=st.integers(2, 50), seed=st.integers(0, 2**16))
@settings(deadline=None)
def test_random_roll_really_rolls_each_item(length: int, seed: int) -> None:
    signals = torch.arange(length, dtype=torch.float32).repeat(6, 1)
    out = random_roll(signals, generator=torch.Generator().manual_seed(seed))
    for row in out:
        shift = int(row[0].item())
        torch.testing.assert_close(row, torch.roll(signals[0], -shift))
    features = torch.arange(30.0).view(1, 1, 10, 3).repeat(4, 2, 1, 1)
    rolled = random_roll(features, dim=2, max_shift=2, generator=torch.Generator().manual_seed(seed))
    assert all(any(torch.equal(r, torch.roll(features[0], s, dims=1)) for s in range(-2, 3)) for r in rolled)


@given(
    length=st.integers(1, 3000),
    rates=st.sampled_from([(8000, 16000), (16000, 8000), (44100, 16000), (16000, 44100), (22050, 48000), (48000, 32000)]),
)
@settings(deadline=None)
def test_resample_length_and_dc_gain(length: int, rates: tuple[int, int]) -> None:
    orig, new = rates
    out = resample(torch.ones(2, length, dtype=torch.float64), orig, new)
    assert out.shape == (2, math.ceil(length * new / orig))
    assert torch.isfinite(out).all()
    margin = 64 * max(1, new // orig)  # the filter's reach into the zero padding
    if out.shape[1] > 2 * margin:
        torch.testing.assert_close(out[:, margin:-margin], torch.ones_like(out[:, margin:-margin]), atol=2e-2, rtol=0)


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("log_mel", {"hop_length": 0}),
        ("log_mel", {"n_mels": 0}),
        ("log_mel", {"target_frames": 0}),
        ("iq_spectrogram", {"hop_length": 0}),
        ("iq_spectrogram", {"n_fft": 0}),
        ("iq_spectrogram", {"target_frames": -1}),
        ("iq_patches", {"patch_size": 0}),
        ("kaldi_fbank", {"num_mel_bins": 0}),
        ("kaldi_fbank", {"std": -1.0}),
    ],
)
def test_a_non_positive_size_is_a_clear_error_naming_it(name: str, setting: dict[str, float]) -> None:
    (key, value), = setting.items()
    with pytest.raises(ValueError, match=f"^{name}: {key} must be positive, got {value}$"):
        transform_registry.create(name, **setting)
