"""Fine-tuning: a classifier over the pre-trained (or a fresh) encoder, evaluated every epoch.

Cross-entropy with label smoothing against mixup's soft targets, SpecAugment on the
features, AudioMAE's structured token dropping, layer-wise learning-rate decay, stochastic
depth, warm-up + cosine. The best evaluation accuracy is linked as ``best.pt`` beside
``last.pt``. ``train_classifier`` is shared with the ``kfold`` recipe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

from components.data.base import folds_of
from components.distributed import all_reduce_sum
from components.errors import UsageError
from components.losses import soft_target_cross_entropy
from components.metrics import confusion_matrix
from components.models.classifier import AudioMAEClassifier, param_groups_lrd
from components.recipes.embed import CheckpointLoader
from components.recipes.engine import (
    LoopSettings,
    TrainLoop,
    WarmupCosineSchedule,
    check_ranges,
    effective_batch_size,
    scaled_learning_rate,
)
from components.recipes.guards import check_eval_size
from components.registry import recipe_registry
from components.runtime import RunContext, eval_loader, split_by_folds
from components.transforms.augment import mixup, spec_augment


@dataclass
class FinetuneSettings:
    """The knobs of one fine-tuning run: the ``finetune`` and ``kfold`` recipes' parameters.

    No defaults here: the recipes' signatures hold them (they are the spec schema), and
    ``finetune_settings_from`` fills every field from those parameters.
    """

    epochs: int
    batch_size: int
    accum_steps: int
    base_lr: float
    lr: float | None
    min_lr: float
    warmup_epochs: float
    weight_decay: float
    layer_decay: float
    label_smoothing: float
    mixup_alpha: float
    freq_mask: int
    time_mask: int
    mask_t_prob: float
    mask_f_prob: float
    drop_path: float
    head_dropout: float
    clip_grad: float | None
    pooling: str
    pretrained: bool
    checkpoint: str | None
    num_workers: int
    checkpoint_every: int
    keep_last: int
    log_every: int


def finetune_settings_from(
    parameters: Mapping[str, Any], others: Sequence[str] = ()
) -> FinetuneSettings:
    """``FinetuneSettings`` from a recipe's parameters (its ``locals()`` on entry).

    ``finetune`` and ``kfold`` spell their parameters out (the signature is the spec schema,
    read statically) and hand them over here instead of forwarding each by name. Every
    parameter must be a settings field or listed in ``others`` (those the recipe uses itself),
    and every field a parameter, so a knob added to one side only fails at the first call.
    """
    names = [f.name for f in fields(FinetuneSettings)]
    missing = [name for name in names if name not in parameters]
    unknown = sorted(set(parameters) - set(names) - set(others))
    if missing or unknown:
        raise TypeError(
            f"recipe parameters and FinetuneSettings disagree: fields {missing} are not "
            f"parameters, parameters {unknown} are neither fields nor in `others`; "
            f"a fine-tuning knob belongs in both (components/recipes/finetune.py)"
        )
    return FinetuneSettings(**{name: parameters[name] for name in names})


def validate_finetune_settings(ctx: RunContext, s: FinetuneSettings) -> None:
    """Out-of-range values are user errors naming the flag (not a NaN three hours later)."""
    check_ranges(
        ctx,
        {
            "base_lr": (s.base_lr, s.base_lr > 0),
            "lr": (s.lr, s.lr is None or s.lr > 0),
            "min_lr": (s.min_lr, s.min_lr >= 0),
            "warmup_epochs": (s.warmup_epochs, s.warmup_epochs >= 0),
            "weight_decay": (s.weight_decay, s.weight_decay >= 0),
            "layer_decay": (s.layer_decay, 0 < s.layer_decay <= 1),
            "label_smoothing": (s.label_smoothing, 0 <= s.label_smoothing < 1),
            "mixup_alpha": (s.mixup_alpha, s.mixup_alpha >= 0),
            "freq_mask": (s.freq_mask, s.freq_mask >= 0),
            "time_mask": (s.time_mask, s.time_mask >= 0),
            "drop_path": (s.drop_path, 0 <= s.drop_path < 1),
            "head_dropout": (s.head_dropout, 0 <= s.head_dropout < 1),
            "clip_grad": (s.clip_grad, s.clip_grad is None or s.clip_grad > 0),
        },
    )


class ClassificationObjective(nn.Module):
    """``forward(features, labels) -> (loss, logs)``: augment (train mode only), classify, soft CE."""

    def __init__(
        self, classifier: nn.Module, num_classes: int, settings: FinetuneSettings
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_classes = num_classes
        self.settings = settings

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.settings
        targets: torch.Tensor = labels
        if self.training:
            if s.freq_mask > 0 or s.time_mask > 0:
                features = spec_augment(
                    features, freq_mask_param=s.freq_mask, time_mask_param=s.time_mask
                )
            if s.mixup_alpha > 0:
                features, targets = mixup(
                    features, labels, self.num_classes, alpha=s.mixup_alpha
                )
        logits = self.classifier(features)
        loss = soft_target_cross_entropy(
            logits, targets, label_smoothing=s.label_smoothing
        )
        accuracy = (logits.detach().argmax(dim=-1) == labels).float().mean()
        return loss, {"train_acc": accuracy}


@torch.no_grad()
def evaluate_classifier(
    ctx: RunContext,
    classifier: nn.Module,
    transform: nn.Module,
    dataset: Any,
    num_classes: int,
    batch_size: int,
) -> tuple[dict[str, float], torch.Tensor]:
    """Accuracy, top-5 accuracy and mean loss over ``dataset`` (summed over ranks), and the confusion matrix."""
    classifier.eval()
    transform.eval()
    loader, _ = eval_loader(ctx, dataset, batch_size)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss_sum = torch.zeros((), dtype=torch.float64)
    top5 = torch.zeros((), dtype=torch.float64)
    for signals, labels, lengths in loader:
        features = transform(signals.to(ctx.device), lengths)
        with ctx.autocast():
            logits = classifier(features)
        logits, labels = logits.float().cpu(), labels.cpu()
        loss_sum += torch.nn.functional.cross_entropy(
            logits, labels, reduction="sum"
        ).double()
        k = min(5, num_classes)
        top5 += (
            (logits.topk(k, dim=-1).indices == labels[:, None])
            .any(dim=-1)
            .double()
            .sum()
        )
        matrix += confusion_matrix(logits.argmax(dim=-1), labels, num_classes)
    # Reduced on the CPU (all_reduce_sum routes through the GPU only where NCCL needs it):
    # float64 counts would not fit on an MPS device.
    totals = all_reduce_sum(
        torch.cat([matrix.flatten().double(), loss_sum.reshape(1), top5.reshape(1)]),
        ctx.dist,
    )
    matrix = (
        totals[: num_classes * num_classes]
        .round()
        .long()
        .reshape(num_classes, num_classes)
    )
    count = max(1, int(matrix.sum()))
    results = {
        "accuracy": float(matrix.diag().sum()) / count,
        "top5_accuracy": float(totals[-1]) / count,
        "loss": float(totals[-2]) / count,
    }
    return results, matrix


def resolve_split(
    ctx: RunContext,
    dataset: Any,
    train_folds: list[int] | None,
    eval_folds: list[int] | None,
) -> tuple[list[int], list[int]]:
    """Default split: hold out the last fold, train on the others."""
    folds = folds_of(dataset.records)
    missing = sorted((set(train_folds or []) | set(eval_folds or [])) - set(folds))
    if missing and ctx.smoke:
        # Synthetic smoke data has its own folds; the spec's split is for the real data.
        ctx.info(
            f"smoke data has folds {folds}, not {missing}: using the default split"
        )
        train_folds = eval_folds = None
    elif missing:
        raise UsageError(
            f"{ctx.section}: folds {missing} do not exist; the data set has folds {folds}"
        )
    if eval_folds is None:
        if len(folds) < 2:
            raise UsageError(
                f"{ctx.section}: the data set has one fold ({folds}); set --{ctx.section}.eval_folds"
            )
        eval_folds = [folds[-1]]
    if train_folds is None:
        train_folds = [f for f in folds if f not in set(eval_folds)]
    overlap = sorted(set(train_folds) & set(eval_folds))
    if overlap:
        raise UsageError(
            f"{ctx.section}: folds {overlap} are in both train_folds and eval_folds"
        )
    if not train_folds:
        raise UsageError(
            f"{ctx.section}: no folds left to train on (eval_folds={eval_folds})"
        )
    return list(train_folds), list(eval_folds)


def build_classifier(
    ctx: RunContext, settings: FinetuneSettings, num_classes: int
) -> tuple[nn.Module, str | None]:
    """The classifier over a pre-trained encoder when one is available (else a fresh one)."""
    loader = CheckpointLoader(ctx)
    path = (
        loader.resolve(settings.checkpoint)
        if settings.pretrained or settings.checkpoint
        else None
    )
    if path is not None:
        model = loader.load(path, drop_path_rate=settings.drop_path)
    else:
        if settings.pretrained:
            ctx.info(
                "no pre-trained encoder (no mae_pretrain step ran, no checkpoint given): training from scratch"
            )
        model = ctx.build_model(drop_path_rate=settings.drop_path)
    classifier = AudioMAEClassifier(
        model,
        num_classes=num_classes,
        drop_path_rate=settings.drop_path,
        mask_t_prob=settings.mask_t_prob,
        mask_f_prob=settings.mask_f_prob,
        head_dropout=settings.head_dropout,
        pooling=settings.pooling,
    ).to(ctx.device)
    return classifier, None if path is None else str(path)


def train_classifier(
    ctx: RunContext,
    settings: FinetuneSettings,
    train_set: Any,
    eval_set: Any,
    subdir: str | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Fine-tune on ``train_set``, evaluating on ``eval_set`` after every epoch; returns a summary.

    ``max_steps`` caps the optimizer steps (``finetune`` passes ``--steps``; ``kfold``, an
    evaluation protocol, runs every fold whole).
    """
    validate_finetune_settings(ctx, settings)
    num_classes = ctx.dataset().num_classes
    where = "" if subdir is None else f"{subdir}: "
    check_eval_size(
        ctx, f"{where}the evaluation set", len(eval_set), num_classes, eval_set
    )
    classifier, source = build_classifier(ctx, settings, num_classes)
    transform = ctx.build_transform()
    ctx.check_fit(classifier.encoder, transform)
    objective = ClassificationObjective(classifier, num_classes, settings)
    effective_batch = effective_batch_size(
        ctx, settings.batch_size, settings.accum_steps, len(train_set)
    )
    peak_lr = scaled_learning_rate(settings.lr, settings.base_lr, effective_batch)
    groups = param_groups_lrd(
        classifier, weight_decay=settings.weight_decay, layer_decay=settings.layer_decay
    )
    for group in groups:
        group.pop(
            "param_names", None
        )  # names are for humans; the optimizer's state needs none
    optimizer = torch.optim.AdamW(groups, lr=peak_lr, betas=(0.9, 0.999))
    manager = ctx.checkpoints(subdir, keep_last=settings.keep_last)
    # One metrics section per training run (kfold: "kfold/fold_3"): steps restart per fold.
    section = ctx.section if subdir is None else f"{ctx.section}/{subdir}"
    last_matrix: dict[str, torch.Tensor] = {}

    def evaluate(epoch: int) -> dict[str, float]:
        results, matrix = evaluate_classifier(
            ctx, classifier, transform, eval_set, num_classes, settings.batch_size
        )
        last_matrix["matrix"] = matrix
        return results

    loop = TrainLoop(
        ctx,
        model=classifier,
        objective=objective,
        transform=transform,
        optimizer=optimizer,
        dataset=train_set,
        settings=LoopSettings(
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            accum_steps=settings.accum_steps,
            clip_grad=settings.clip_grad,
            checkpoint_every=settings.checkpoint_every,
            log_every=settings.log_every,
            num_workers=settings.num_workers,
        ),
        lr_at=WarmupCosineSchedule(peak_lr, settings.min_lr, settings.warmup_epochs),
        manager=manager,
        evaluate=evaluate,
        best_key="accuracy",
        metrics_section=section,
        max_steps=max_steps,
    )
    ctx.info(
        f"{where}{len(train_set)} train / {len(eval_set)} eval items, {num_classes} classes, "
        f"{loop.plan.run_until} of {loop.plan.total_steps} steps, peak lr {peak_lr:.3g}, encoder {source or 'fresh'}"
    )
    result = loop.run()
    class_names = list(ctx.dataset().class_names)
    if ctx.is_main and "matrix" in last_matrix:
        name = section.replace("/", "_")
        ctx.plots.confusion(last_matrix["matrix"], class_names, f"{name}_confusion.png")
        ctx.plots.loss_curves(ctx.metrics.jsonl_path, section)
    return {
        "accuracy": result.last_eval.get("accuracy"),
        "top5_accuracy": result.last_eval.get("top5_accuracy"),
        "eval_loss": result.last_eval.get("loss"),
        "best_accuracy": result.best_metric,
        "eval_items": len(eval_set),
        "steps": result.step,
        "total_steps": result.total_steps,
        "final_train_loss": (
            result.last_loss if math.isfinite(result.last_loss) else None
        ),
        "encoder": source,
        "last_checkpoint": str(manager.last_path),
        "best_checkpoint": str(manager.best_path),
        "steps_per_s": round(result.steps_per_s, 4),
        "data_wait_share": round(result.data_wait_share, 4),
        "confusion_matrix": (
            last_matrix["matrix"].tolist() if "matrix" in last_matrix else None
        ),
    }


@recipe_registry.register("finetune", version="1.0")
def finetune(
    ctx: RunContext,
    /,
    *,
    epochs: int = 50,
    batch_size: int = 32,
    accum_steps: int = 1,
    base_lr: float = 1e-3,
    lr: float | None = None,
    min_lr: float = 1e-6,
    warmup_epochs: float = 5.0,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    label_smoothing: float = 0.1,
    mixup_alpha: float = 0.0,
    freq_mask: int = 0,
    time_mask: int = 0,
    mask_t_prob: float = 0.0,
    mask_f_prob: float = 0.0,
    drop_path: float = 0.1,
    head_dropout: float = 0.0,
    clip_grad: float | None = None,
    pooling: Literal["mean", "cls"] = "mean",
    pretrained: bool = True,
    checkpoint: str | None = None,
    train_folds: list[int] | None = None,
    eval_folds: list[int] | None = None,
    num_workers: int = 4,
    checkpoint_every: int = 500,
    keep_last: int = 2,
    log_every: int = 20,
) -> dict[str, Any]:
    """Fine-tune a classifier; evaluation folds default to the last fold, training to the rest.

    The encoder comes from ``checkpoint``, else from an earlier ``mae_pretrain`` step (when
    ``pretrained``), else it is trained from scratch. ``freq_mask``/``time_mask`` are
    SpecAugment widths in bins/frames (0 = off), ``mixup_alpha`` 0 = off.

    Args:
        epochs: Passes over the training folds; the lr schedule spans them (--steps caps
            a short run).
        batch_size: Clips per optimizer step and process (per GPU under torchrun),
            before accumulation.
        accum_steps: Batches whose gradients are summed before each optimizer step:
            raises the effective batch without more memory.
        base_lr: Learning rate per 256 clips of effective batch: the peak lr is base_lr
            x effective batch / 256 unless lr is set.
        lr: Peak learning rate, used as given instead of the base_lr rule; None applies
            the rule.
        min_lr: Learning rate the cosine decay ends at.
        warmup_epochs: Epochs (fractions allowed) of linear warm-up from 0 to the peak
            lr before the cosine decay.
        weight_decay: AdamW weight decay on weight matrices (biases and norms are not
            decayed).
        layer_decay: Layer-wise lr decay (0-1]: each block nearer the input gets this
            factor more; 1 trains every layer at the same lr.
        label_smoothing: Label smoothing of the cross-entropy (0 = hard targets).
        mixup_alpha: Beta(alpha, alpha) parameter of mixup between clips of a batch; 0
            turns mixup off.
        freq_mask: SpecAugment frequency-mask width in bins (largest band masked per
            clip); 0 = off.
        time_mask: SpecAugment time-mask width in frames (largest span masked per clip);
            0 = off.
        mask_t_prob: Share of time rows of the token grid dropped in training
            (AudioMAE's fine-tuning masking; also faster), 0-1.
        mask_f_prob: Share of frequency columns of the token grid dropped in training,
            0-1.
        drop_path: Stochastic-depth rate of the encoder's last block while fine-tuning
            (rising from 0 at the first).
        head_dropout: Dropout before the classification head, 0-1.
        clip_grad: Clip the gradient norm to this value before each step; None does not
            clip.
        pooling: How the encoder's tokens become one vector for the head: mean of the
            patch tokens, or the CLS token.
        pretrained: Start from the encoder an earlier mae_pretrain step saved; False (or
            no such step) trains from random initialisation.
        checkpoint: Encoder checkpoint to start from (this script's or an official
            AudioMAE / AudioMAE++ file); overrides the mae_pretrain step's.
        train_folds: Folds to train on; None takes every fold not evaluated.
        eval_folds: Folds to evaluate on after every epoch; None takes the last fold.
        num_workers: Data-loader worker processes per process (0 loads in the main
            process, simplest for debugging).
        checkpoint_every: Optimizer steps between checkpoints (one is also written at
            every epoch end and when the run stops).
        keep_last: Number of most recent checkpoints kept on disk (older ones are
            deleted).
        log_every: Optimizer steps between progress lines and metrics records.
    """
    settings = finetune_settings_from(
        locals(), others=("ctx", "train_folds", "eval_folds")
    )
    dataset = ctx.dataset()
    train_folds, eval_folds = resolve_split(ctx, dataset, train_folds, eval_folds)
    summary = train_classifier(
        ctx,
        settings,
        split_by_folds(dataset, train_folds),
        split_by_folds(dataset, eval_folds),
        max_steps=ctx.max_steps,
    )
    summary.update(train_folds=train_folds, eval_folds=eval_folds)
    # Decided from the results, not the file system: every rank must agree.
    ctx.state["classifier_checkpoint"] = (
        summary["best_checkpoint"]
        if summary["best_accuracy"] is not None
        else summary["last_checkpoint"]
    )
    return summary
