"""Catalog: data sets (labelled signals with folds)."""

from __future__ import annotations

from components.data.audio_folder import AudioFolder
from components.data.audio_io import (
    AudioFileError,
    DataFormatError,
    WaveformCache,
    load_audio,
    read_wav,
)
from components.data.base import Record, SignalDataset, filter_folds, leave_one_fold_out
from components.data.esc50 import ESC50, download_esc50
from components.data.feature_shards import FeatureShards, IQShards
from components.data.radioml import RadioML2016, RadioML2018
from components.data.shards import AudioShards
from components.data.synthetic import SyntheticAudio, SyntheticIQ

__all__ = [
    "ESC50",
    "AudioFileError",
    "AudioFolder",
    "AudioShards",
    "DataFormatError",
    "FeatureShards",
    "IQShards",
    "RadioML2016",
    "RadioML2018",
    "Record",
    "SignalDataset",
    "SyntheticAudio",
    "SyntheticIQ",
    "WaveformCache",
    "download_esc50",
    "filter_folds",
    "leave_one_fold_out",
    "load_audio",
    "read_wav",
]
