"""SpecAugment masks as AudioMAE's fine-tuning does: on the raw fbank, before normalising it.

The official pipeline (facebookresearch/AudioMAE ``dataset.py``, ``__getitem__``, as AST's)
applies torchaudio's ``FrequencyMasking``/``TimeMasking`` (mask value 0) to the log-mel fbank
and only then computes ``(fbank - norm_mean) / (norm_std * 2)``, so a masked bin holds
``-mean / (2 std)``, not 0. Our ``ClassificationObjective`` masks the transform's normalised
output on the device; these tests check that it gives the official features, mask for mask.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from components.data.feature_shards import PrecomputedFeatures
from components.recipes.finetune import FinetuneSettings, classification_objective
from components.transforms.augment import (
    SpecAugment,
    spec_augment,
    spec_augment_fill_value,
)
from components.transforms.kaldi import (
    AUDIOSET_FBANK_MEAN,
    AUDIOSET_FBANK_STD,
    ESC50_FBANK_MEAN,
    ESC50_FBANK_STD,
    KaldiFbank,
)
from components.transforms.spectral import LogMel

NUM_CLASSES = 4
FBANK = dict(sample_rate=16000, num_mel_bins=128, target_frames=256)
AUDIOMAE_STATS = [
    pytest.param(ESC50_FBANK_MEAN, ESC50_FBANK_STD, id="esc50"),
    pytest.param(AUDIOSET_FBANK_MEAN, AUDIOSET_FBANK_STD, id="audioset"),
]


class Capture(nn.Module):
    """Stands in for the classifier: keeps the features it is given, returns zero logits."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.seen = features
        return features.new_zeros(features.shape[0], NUM_CLASSES)


def settings(**changes: object) -> FinetuneSettings:
    values = {f.name: 0 for f in dataclasses.fields(FinetuneSettings)}
    values.update(label_smoothing=0.0, mixup_alpha=0.0, lr=None, clip_grad=None)
    values.update(pooling="mean", pretrained=False, checkpoint=None)
    values.update(changes)
    return FinetuneSettings(**values)


def clips() -> torch.Tensor:
    # 2 s clips: 198 fbank frames, zero-padded to 256 (the padding is a raw 0 too)
    return torch.rand(3, 2 * 16000, generator=torch.Generator().manual_seed(5)) - 0.5


def masked_by_objective(
    features: torch.Tensor, transform: nn.Module | None, seed: int
) -> torch.Tensor:
    objective = classification_objective(
        Capture(), NUM_CLASSES, settings(freq_mask=48, time_mask=96), transform
    ).train()
    torch.manual_seed(seed)
    objective(features, torch.arange(features.shape[0]) % NUM_CLASSES)
    return objective.classifier.seen


@pytest.mark.parametrize(("mean", "std"), AUDIOMAE_STATS)
def test_masking_normalised_fbanks_equals_masking_the_raw_fbank_first(
    mean: float, std: float
) -> None:
    transform = KaldiFbank(**FBANK, mean=mean, std=std).eval()
    raw = KaldiFbank(**FBANK, mean=None, std=None).eval()(clips())
    features = transform(clips())
    torch.testing.assert_close(features, (raw - mean) / (std * 2))
    for seed in range(4):
        ours = masked_by_objective(features, transform, seed)
        # the official order, same mask positions (the draws do not depend on the values):
        # torchaudio's masks write 0 into the raw fbank, normalised afterwards
        torch.manual_seed(seed)
        official = (spec_augment(raw, 48, 96, mask_value=0.0) - mean) / (std * 2)
        masked = official != features
        assert masked.any() and not masked.all()
        torch.testing.assert_close(ours, official)
        # a mask of zeros (the mean of the normalised features) is what AudioMAE does not do
        zeros = masked_by_objective(features, None, seed)
        assert (zeros - official).abs().amax() > 0.1


@pytest.mark.parametrize(("mean", "std"), AUDIOMAE_STATS)
def test_the_fill_value_is_the_transforms_image_of_a_raw_zero(
    mean: float, std: float
) -> None:
    transform = KaldiFbank(**FBANK, mean=mean, std=std)
    assert spec_augment_fill_value(transform) == pytest.approx(
        -mean / (2 * std), rel=1e-6
    )
    # precomputed features run the same transform behind a wrapper
    wrapped = PrecomputedFeatures(transform, (1, 128))
    assert spec_augment_fill_value(wrapped) == spec_augment_fill_value(transform)


def test_without_a_fixed_normalisation_masks_hold_zero() -> None:
    assert spec_augment_fill_value(None) == 0.0
    assert spec_augment_fill_value(KaldiFbank(**FBANK, mean=None, std=None)) == 0.0
    # per-clip standardisation: a raw 0 has no one image; 0 is the clip's mean
    assert spec_augment_fill_value(LogMel()) == 0.0


def test_the_module_masks_with_its_mask_value() -> None:
    features = torch.randn(2, 1, 64, 32)
    torch.manual_seed(0)
    out = SpecAugment(16, 24, mask_value=0.75).train()(features)
    torch.manual_seed(0)
    expected = spec_augment(features, 16, 24, mask_value=0.75)
    assert (out != features).any() and out.eq(expected).all()
    assert out[out != features].eq(0.75).all()
