"""The training objectives: what each recipe's loop minimises, ``forward(features, labels) -> (loss, logs)``.

``MAEObjective`` (pre-training) reconstructs masked patches, optionally with InfoNCE and
uniformity terms over two maskings of each clip; ``ClassificationObjective`` (fine-tuning)
augments (SpecAugment, mixup) and scores a classifier with label-smoothed cross-entropy. The
loss functions themselves are in ``components.losses``; ``logs`` are 0-dim tensors the loops
average and report beside the loss.
"""

from __future__ import annotations

import torch
from torch import nn

from components.losses import (
    info_nce_loss,
    masked_reconstruction_loss,
    soft_target_cross_entropy,
    uniformity_loss,
)
from components.transforms.augment import mixup, spec_augment


class MAEObjective(nn.Module):
    """``forward(features, labels) -> (loss, logs)`` for masked reconstruction (+ auxiliary terms).

    Without auxiliary terms and with the model's own ``norm_pix_loss`` it is just ``model(x)``;
    otherwise encoder and decoder are called separately so the latent can be pooled.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mask_ratio: float | None = None,
        norm_pix_loss: bool | None = None,
        infonce_weight: float = 0.0,
        infonce_temperature: float = 0.1,
        uniformity_weight: float = 0.0,
        uniformity_t: float = 2.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.mask_ratio = model.mask_ratio if mask_ratio is None else float(mask_ratio)
        self.norm_pix_loss = (
            model.norm_pix_loss if norm_pix_loss is None else bool(norm_pix_loss)
        )
        self.infonce_weight, self.infonce_temperature = (
            infonce_weight,
            infonce_temperature,
        )
        self.uniformity_weight, self.uniformity_t = uniformity_weight, uniformity_t

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = self.model
        plain = (
            self.infonce_weight == 0
            and self.uniformity_weight == 0
            and self.norm_pix_loss == model.norm_pix_loss
        )
        if plain:
            loss, _, _ = model(features, mask_ratio=self.mask_ratio)
            return loss, {}
        latent, mask, ids_restore = model.forward_encoder(features, self.mask_ratio)
        pred = model.forward_decoder(latent, ids_restore)
        recon = masked_reconstruction_loss(
            pred, model.patchify(features), mask, norm_pix=self.norm_pix_loss
        )
        loss, logs = recon, {"recon": recon.detach()}
        pooled = latent[:, 1:].float().mean(dim=1)  # visible patch tokens, CLS excluded
        if self.infonce_weight > 0:
            second, _, _ = model.forward_encoder(features, self.mask_ratio)
            nce = info_nce_loss(
                pooled,
                second[:, 1:].float().mean(dim=1),
                temperature=self.infonce_temperature,
            )
            loss = loss + self.infonce_weight * nce
            logs["infonce"] = nce.detach()
        if self.uniformity_weight > 0:
            uniform = uniformity_loss(pooled, t=self.uniformity_t)
            loss = loss + self.uniformity_weight * uniform
            logs["uniformity"] = uniform.detach()
        return loss, logs


class ClassificationObjective(nn.Module):
    """``forward(features, labels) -> (loss, logs)``: augment (train mode only), classify, soft CE.

    ``freq_mask``/``time_mask`` are SpecAugment widths (bins, frames; 0 = off), ``mixup_alpha``
    mixup's Beta parameter (0 = off). Masked bins hold ``mask_value``: what the transform maps
    a raw 0 to (``spec_augment_fill_value``), as AudioMAE masks the fbank before normalising.
    """

    def __init__(
        self,
        classifier: nn.Module,
        num_classes: int,
        *,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        freq_mask: int = 0,
        time_mask: int = 0,
        mask_value: float = 0.0,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_classes = num_classes
        self.label_smoothing, self.mixup_alpha = label_smoothing, mixup_alpha
        self.freq_mask, self.time_mask, self.mask_value = (
            freq_mask,
            time_mask,
            mask_value,
        )

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        targets: torch.Tensor = labels
        if self.training:
            if self.freq_mask > 0 or self.time_mask > 0:
                features = spec_augment(
                    features,
                    freq_mask_param=self.freq_mask,
                    time_mask_param=self.time_mask,
                    mask_value=self.mask_value,
                )
            if self.mixup_alpha > 0:
                features, targets = mixup(
                    features, labels, self.num_classes, alpha=self.mixup_alpha
                )
        logits = self.classifier(features)
        loss = soft_target_cross_entropy(
            logits, targets, label_smoothing=self.label_smoothing
        )
        accuracy = (logits.detach().argmax(dim=-1) == labels).float().mean()
        return loss, {"train_acc": accuracy}
