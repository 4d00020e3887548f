"""Catalog: models (masked autoencoders over [B, C, T, F] inputs, and a classifier head)."""

from __future__ import annotations

from components.models.audiomae import AudioMAE
from components.models.audiomae_pp import AudioMAEPlusPlus
from components.models.base import BaseAutoencoder
from components.models.official_weights import (
    CheckpointMismatchError,
    export_official_state_dict,
    load_official_checkpoint,
)
from components.models.classifier import AudioMAEClassifier, param_groups_lrd
from components.models.mae import MaskedAutoencoderViT

__all__ = [
    "AudioMAE",
    "AudioMAEClassifier",
    "AudioMAEPlusPlus",
    "BaseAutoencoder",
    "CheckpointMismatchError",
    "MaskedAutoencoderViT",
    "export_official_state_dict",
    "load_official_checkpoint",
    "param_groups_lrd",
]
