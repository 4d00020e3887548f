"""Catalog: recipes (training loops run by the emitted script: pre-training, fine-tuning, probes, embeddings, k-fold)."""

from __future__ import annotations

from components.recipes.embed import embed
from components.recipes.finetune import finetune
from components.recipes.kfold import kfold
from components.recipes.pretrain import mae_pretrain
from components.recipes.probe import knn, linear_probe
from components.recipes.shard import write_features, write_shards

__all__ = [
    "embed",
    "finetune",
    "kfold",
    "knn",
    "linear_probe",
    "mae_pretrain",
    "write_features",
    "write_shards",
]
