"""Fine-tuning head over a pre-trained masked autoencoder's encoder, and layer-wise LR decay.

``AudioMAEClassifier(model, num_classes=50)`` keeps the model's encoder (the decoder is
dropped), mean-pools the patch tokens, normalises them (``fc_norm``) and applies a linear
head, as AudioMAE's ``models_vit.VisionTransformer(global_pool=True)``: there the encoder's
final ``norm`` is replaced by ``fc_norm`` after pooling, so a fine-tuned official checkpoint
has no ``norm`` keys. With ``pooling="cls"`` the encoder keeps its ``norm`` and the CLS token
feeds the head. ``linear_probe=True`` freezes the encoder and puts a BatchNorm without affine
parameters before the head (MAE's linear-probing protocol).

During training, ``mask_t_prob`` / ``mask_f_prob`` drop whole time rows / frequency columns
of the token grid (AudioMAE's fine-tuning masking): a cheap, strong augmentation that also
speeds fine-tuning up, since dropped tokens are never computed.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from components.models.base import BaseAutoencoder
from components.models.layers import LAYER_NORM_EPS, DropPath, drop_path_rates

__all__ = ["AudioMAEClassifier", "param_groups_lrd"]


def random_sorted_subset(
    batch: int, size: int, keep: int, device: torch.device
) -> torch.Tensor:
    """Per row of ``batch``, ``keep`` distinct indices out of ``range(size)`` at random, ascending."""
    noise = torch.rand(batch, size, device=device)
    return noise.argsort(dim=1)[:, :keep].sort(dim=1).values


class AudioMAEClassifier(nn.Module):
    """Classifier ``[B, C, T, F] -> logits [B, num_classes]`` over ``model``'s encoder.

    ``model`` is any ``BaseAutoencoder`` exposing ``encode_tokens(x, ids_keep)`` and ``blocks``
    (both catalog models do); the classifier takes ownership of it and removes its decoder.
    ``drop_path_rate`` rises linearly over the encoder blocks (stochastic depth).
    """

    def __init__(
        self,
        model: BaseAutoencoder,
        num_classes: int,
        drop_path_rate: float = 0.1,
        mask_t_prob: float = 0.0,
        mask_f_prob: float = 0.0,
        head_dropout: float = 0.0,
        pooling: str = "mean",
        linear_probe: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(
                f"AudioMAEClassifier: num_classes must be >= 1, got {num_classes}"
            )
        if pooling not in ("mean", "cls"):
            raise ValueError(
                f"AudioMAEClassifier: pooling must be 'mean' or 'cls', got {pooling!r}"
            )
        for name, prob in (("mask_t_prob", mask_t_prob), ("mask_f_prob", mask_f_prob)):
            if not 0.0 <= prob < 1.0:
                raise ValueError(
                    f"AudioMAEClassifier: {name} must be in [0, 1), got {prob}"
                )
        if not hasattr(model, "encode_tokens") or not hasattr(model, "blocks"):
            raise TypeError(
                f"AudioMAEClassifier needs a model with encode_tokens() and blocks (e.g. audiomae++, baseline), "
                f"got {type(model).__name__}"
            )
        model.remove_decoder()
        self.encoder = model
        self.num_classes = num_classes
        self.pooling = pooling
        self.mask_t_prob = mask_t_prob
        self.mask_f_prob = mask_f_prob
        self.linear_probe = linear_probe
        embed_dim = model.embed_dim
        self.set_drop_path_rate(drop_path_rate)

        if pooling == "mean":
            # AudioMAE's global pooling: the encoder's final norm moves after the pooling
            model.norm = nn.Identity()
            self.fc_norm: nn.Module = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        else:
            self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)
        if linear_probe:
            for parameter in self.encoder.parameters():
                parameter.requires_grad_(False)
            self.fc_norm = nn.Identity()
            self.probe_norm: nn.Module = nn.BatchNorm1d(
                embed_dim, affine=False, eps=1e-6
            )
        else:
            self.probe_norm = nn.Identity()

    def set_drop_path_rate(self, drop_path_rate: float) -> None:
        """Stochastic depth rising linearly from 0 to ``drop_path_rate`` over the encoder blocks."""
        blocks = self.encoder.blocks
        for block, rate in zip(blocks, drop_path_rates(drop_path_rate, len(blocks))):
            for module in block.modules():
                if isinstance(module, DropPath):
                    module.drop_prob = rate

    def sample_kept_tokens(
        self, batch: int, device: torch.device
    ) -> torch.Tensor | None:
        """Token indices ``[B, kept_t * kept_f]`` left after dropping random rows and columns."""
        if not self.training or (self.mask_t_prob == 0.0 and self.mask_f_prob == 0.0):
            return None
        rows, cols = self.encoder.grid_size
        keep_t = max(1, int(rows * (1.0 - self.mask_t_prob)))
        keep_f = max(1, int(cols * (1.0 - self.mask_f_prob)))
        kept_rows = random_sorted_subset(batch, rows, keep_t, device)
        kept_cols = random_sorted_subset(batch, cols, keep_f, device)
        return (kept_rows[:, :, None] * cols + kept_cols[:, None, :]).reshape(
            batch, keep_t * keep_f
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised clip features ``[B, D]`` (before the head)."""
        ids_keep = self.sample_kept_tokens(x.shape[0], x.device)
        if self.linear_probe:
            with torch.no_grad():
                tokens = self.encoder.encode_tokens(x, ids_keep)
        else:
            tokens = self.encoder.encode_tokens(x, ids_keep)
        pooled = tokens[:, 1:].mean(dim=1) if self.pooling == "mean" else tokens[:, 0]
        return self.fc_norm(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.probe_norm(self.forward_features(x))))

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{name}" for name in self.encoder.no_weight_decay()}


_BLOCK_INDEX = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDING_NAMES = ("cls_token", "pos_embed", "patch_embed", "mask_token")


def _layer_id(name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for encoder block i, ``num_layers`` for everything after the blocks."""
    match = _BLOCK_INDEX.search(name)
    if match is not None and "decoder_blocks" not in name:
        return int(match.group(1)) + 1
    if any(part in _EMBEDDING_NAMES for part in name.split(".")):
        return 0
    return num_layers


def param_groups_lrd(
    model: nn.Module,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    no_weight_decay_list: tuple[str, ...] | set[str] = (),
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise learning-rate decay (BEiT / MAE fine-tuning).

    Block ``i`` of ``L`` gets ``lr_scale = layer_decay ** (L + 1 - (i + 1))``; embeddings the
    smallest scale, the head and final norms 1.0. Biases, norm weights (all 1-D parameters),
    tokens and position tables get no weight decay. Each group carries ``lr_scale``: the
    training loop sets ``group["lr"] = lr * group["lr_scale"]`` (frozen parameters are skipped).
    """
    blocks = [
        name
        for name, _ in model.named_modules()
        if re.search(r"(?:^|\.)blocks\.\d+$", name) and "decoder" not in name
    ]
    num_layers = len(blocks) + 1
    skip = set(no_weight_decay_list)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = (
            parameter.ndim == 1 or name in skip or name.endswith(_EMBEDDING_NAMES[:2])
        )
        layer = _layer_id(name, num_layers)
        group = groups.setdefault(
            (layer, no_decay),
            {
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (num_layers - layer),
            },
        )
        group["params"].append(parameter)
        group["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]
