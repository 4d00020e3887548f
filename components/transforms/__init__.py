"""Catalog: transforms (signal front ends that run batched on the training device)."""

from __future__ import annotations

from components.transforms.augment import (
    SpecAugment,
    mixup,
    random_gain,
    random_roll,
    spec_augment,
)
from components.transforms.base import SignalTransform
from components.transforms.kaldi import KaldiFbank, kaldi_fbank_features
from components.transforms.resample import Resample, resample
from components.transforms.spectral import IQPatches, IQSpectrogram, LogMel

__all__ = [
    "IQPatches",
    "IQSpectrogram",
    "KaldiFbank",
    "LogMel",
    "Resample",
    "SignalTransform",
    "SpecAugment",
    "kaldi_fbank_features",
    "mixup",
    "random_gain",
    "random_roll",
    "resample",
    "spec_augment",
]
