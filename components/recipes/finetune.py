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
from typing import Any, Callable, Literal

import torch
from torch import nn

from components.data.base import folds_of
from components.distributed import all_reduce_sum
from components.errors import UsageError
from components.loop_support import (
    CheckSchedule,
    DeviceWindow,
    LoopPlan,
    LoopResult,
    LoopSettings,
    ProgressMeter,
    TrainState,
    Trainables,
    checkpoint_payload,
    epoch_batches,
    plan_loop,
    prepare_objective,
    raise_if_non_finite,
    restore_training,
)
from components.metrics import confusion_matrix
from components.models.classifier import AudioMAEClassifier, param_groups_lrd
from components.objectives import ClassificationObjective
from components.recipes.embed import CheckpointLoader
from components.recipes.engine import (
    WarmupCosineSchedule,
    accumulate_and_step,
    check_ranges,
    effective_batch_size,
    scaled_learning_rate,
)
from components.recipes.guards import BatchGuard, check_eval_size
from components.registry import recipe_registry
from components.run_checkpoint import Checkpointer, atomic_link
from components.runtime import (
    Handoff,
    RunRecord,
    Stage,
    StepResult,
    StopRequested,
    eval_loader,
    split_by_folds,
)
from components.transforms.augment import spec_augment_fill_value


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


def validate_finetune_settings(stage: Stage, s: FinetuneSettings) -> None:
    """Out-of-range values are user errors naming the flag (not a NaN three hours later)."""
    check_ranges(
        stage,
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


def classification_objective(
    classifier: nn.Module,
    num_classes: int,
    settings: FinetuneSettings,
    transform: nn.Module | None,
) -> ClassificationObjective:
    """The objective with the run's augmentations; SpecAugment's masks hold what ``transform``
    maps a raw 0 to (``spec_augment_fill_value``), as AudioMAE masks the fbank before normalising.
    """
    return ClassificationObjective(
        classifier,
        num_classes,
        label_smoothing=settings.label_smoothing,
        mixup_alpha=settings.mixup_alpha,
        freq_mask=settings.freq_mask,
        time_mask=settings.time_mask,
        mask_value=spec_augment_fill_value(transform),
    )


@torch.no_grad()
def evaluate_classifier(
    run: RunRecord,
    classifier: nn.Module,
    transform: nn.Module,
    dataset: Any,
    num_classes: int,
    batch_size: int,
) -> tuple[dict[str, float], torch.Tensor]:
    """Accuracy, top-5 accuracy and mean loss over ``dataset`` (summed over ranks), and the confusion matrix."""
    classifier.eval()
    transform.eval()
    loader, _ = eval_loader(run, dataset, batch_size)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss_sum = torch.zeros((), dtype=torch.float64)
    top5 = torch.zeros((), dtype=torch.float64)
    for signals, labels, lengths in loader:
        features = transform(signals.to(run.device), lengths)
        with run.autocast():
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
        run.dist,
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
    stage: Stage,
    dataset: Any,
    train_folds: list[int] | None,
    eval_folds: list[int] | None,
) -> tuple[list[int], list[int]]:
    """Default split: hold out the last fold, train on the others."""
    folds = folds_of(dataset.records)
    missing = sorted((set(train_folds or []) | set(eval_folds or [])) - set(folds))
    if missing and stage.run.smoke:
        # Synthetic smoke data has its own folds; the spec's split is for the real data.
        stage.info(
            f"smoke data has folds {folds}, not {missing}: using the default split"
        )
        train_folds = eval_folds = None
    elif missing:
        raise UsageError(
            f"{stage.section}: folds {missing} do not exist; the data set has folds {folds}"
        )
    if eval_folds is None:
        if len(folds) < 2:
            raise UsageError(
                f"{stage.section}: the data set has one fold ({folds}); set --{stage.section}.eval_folds"
            )
        eval_folds = [folds[-1]]
    if train_folds is None:
        train_folds = [f for f in folds if f not in set(eval_folds)]
    overlap = sorted(set(train_folds) & set(eval_folds))
    if overlap:
        raise UsageError(
            f"{stage.section}: folds {overlap} are in both train_folds and eval_folds"
        )
    if not train_folds:
        raise UsageError(
            f"{stage.section}: no folds left to train on (eval_folds={eval_folds})"
        )
    return list(train_folds), list(eval_folds)


def build_classifier(
    stage: Stage, settings: FinetuneSettings, num_classes: int
) -> tuple[nn.Module, str | None]:
    """The classifier over a pre-trained encoder when one is available (else a fresh one)."""
    loader = CheckpointLoader(stage)
    path = (
        loader.resolve(settings.checkpoint)
        if settings.pretrained or settings.checkpoint
        else None
    )
    if path is not None:
        model = loader.load(path, drop_path_rate=settings.drop_path)
    else:
        if settings.pretrained:
            stage.info(
                "no pre-trained encoder (no mae_pretrain step ran, no checkpoint given): training from scratch"
            )
        model = stage.components.model(drop_path_rate=settings.drop_path)
    classifier = AudioMAEClassifier(
        model,
        num_classes=num_classes,
        drop_path_rate=settings.drop_path,
        mask_t_prob=settings.mask_t_prob,
        mask_f_prob=settings.mask_f_prob,
        head_dropout=settings.head_dropout,
        pooling=settings.pooling,
    ).to(stage.run.device)
    return classifier, None if path is None else str(path)


def record_evaluation(
    stage: Stage,
    state: TrainState,
    results: dict[str, float],
    step: int,
    epoch: int,
    section: str,
) -> bool:
    """Log an evaluation after step ``step`` into ``state``; whether its accuracy is the best so far."""
    state.last_eval = {k: float(v) for k, v in results.items()}
    state.evaluated_at = step
    stage.metrics.log(section, step, state.last_eval, kind="eval")
    shown = "  ".join(f"{k} {v:.4f}" for k, v in state.last_eval.items())
    stage.info(f"eval after step {step} (epoch {epoch + 1}): {shown}")
    accuracy = state.last_eval.get("accuracy")
    if accuracy is None or not math.isfinite(accuracy):  # a NaN is never the best
        return False
    if state.best_metric is None or accuracy > state.best_metric:  # ties keep the first
        state.best_metric = accuracy
        return True
    return False


def classifier_loop(
    stage: Stage,
    *,
    model: nn.Module,
    objective: nn.Module,
    transform: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: Any,
    settings: LoopSettings,
    plan: LoopPlan,
    lr_at: Callable[[int, LoopPlan], float],
    checkpointer: Checkpointer,
    evaluate: Callable[[int], dict[str, float]],
    section: str,
    on_step: Callable[[int], None] | None = None,
) -> LoopResult:
    """Train a classifier for ``plan.run_until`` steps, evaluating after every epoch and at the end.

    As ``pretrain_loop`` (checkpoints, exact resume, stop on SIGTERM/SIGINT, NaN check at
    the device window's syncs), plus: ``evaluate(epoch)`` runs at every epoch end, and the
    checkpoint with the best ``accuracy`` so far is linked as ``best.pt``. A stop at an epoch
    end saves first and evaluates after the restart (a preemption leaves seconds). Metrics
    and progress lines go under ``section`` (``kfold`` names each fold's).
    """
    run = stage.run
    wrapped = prepare_objective(stage, objective, transform, dataset)  # compiled, DDP
    parts = Trainables(model, optimizer, run.grad_scaler())
    guard = BatchGuard(stage, transform, dataset)
    start_step, state = (
        restore_training(stage, checkpointer, plan, parts, section)
        if plan.total_steps
        else (0, TrainState())
    )

    def evaluate_after(step: int) -> bool:
        """Evaluate, log, and say whether this is the best accuracy so far."""
        epoch = max(0, step - 1) // max(1, plan.steps_per_epoch)
        best = record_evaluation(stage, state, evaluate(epoch), step, epoch, section)
        wrapped.train()
        transform.train()
        return best

    def evaluate_and_link_best(step: int) -> None:  # outside an epoch-end save
        if evaluate_after(step) and run.is_main and checkpointer.last_path.exists():
            atomic_link(checkpointer.last_path, checkpointer.best_path)

    if state.pending_eval:  # the evaluation a stop at an epoch end postponed
        evaluate_and_link_best(start_step)
        state.pending_eval = False
    if plan.total_steps == 0:
        checkpointer.save(checkpoint_payload(stage, plan, 0, state, parts), step=0)
    window = DeviceWindow(run.device, run.dist)  # losses, summed on the device
    meter = ProgressMeter(stage.metrics, run.device, plan, section)
    checks = CheckSchedule(settings, plan, start_step, distributed=run.dist.enabled)
    step = start_step
    wrapped.train()
    transform.train()
    while step < plan.run_until:
        batches = epoch_batches(stage, dataset, plan, step, settings.num_workers)
        epoch_end = (step // plan.steps_per_epoch + 1) * plan.steps_per_epoch
        while step < min(epoch_end, plan.run_until):
            meter.step_started()
            done = accumulate_and_step(
                run,
                batches,
                objective=wrapped,
                transform=transform,
                parts=parts,
                guard=guard,
                lr=lr_at(step, plan),
                accum_steps=plan.accum_steps,
                clip_grad=settings.clip_grad,
            )
            step += 1
            window.add(step, done)
            stopping = False
            if checks.sync_due(step, epoch_end, window.steps, stage.stop.requested):
                totals = window.sync(stage.stop.requested)
                raise_if_non_finite(
                    section, totals, step, run.dist.world_size, checkpointer.last_path
                )
                meter.add(totals)
                checks.adapt(totals.step_seconds)
                stopping = totals.stop
            meter.step_done(done.wait)
            if on_step is not None:
                on_step(step)
            if checks.log_due(step):
                meter.log(step, lr_at(step - 1, plan))
                guard.report(step, section)
            best = step == epoch_end and not stopping and evaluate_after(step)
            if stopping or checks.checkpoint_due(step, epoch_end):
                # A stop at an epoch end saves first and evaluates after the restart.
                state.pending_eval = stopping and step == epoch_end
                payload = checkpoint_payload(stage, plan, step, state, parts)
                checkpointer.save(payload, step=step, best=best)
            if stopping:
                raise StopRequested(
                    f"{stage.section}: stopped by {stage.stop.signal_name or 'another rank'} "
                    f"at step {step}; checkpoint saved"
                )
    if state.evaluated_at != step:  # a capped run ends inside an epoch
        evaluate_and_link_best(step)
    return meter.result(step, start_step, state)


def train_classifier(
    stage: Stage,
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
    validate_finetune_settings(stage, settings)
    num_classes = stage.components.dataset().num_classes
    where = "" if subdir is None else f"{subdir}: "
    check_eval_size(
        stage, f"{where}the evaluation set", len(eval_set), num_classes, eval_set
    )
    classifier, source = build_classifier(stage, settings, num_classes)
    transform = stage.components.transform()
    stage.components.check_fit(classifier.encoder, transform)
    objective = classification_objective(classifier, num_classes, settings, transform)
    effective_batch = effective_batch_size(
        stage.run, settings.batch_size, settings.accum_steps, len(train_set)
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
    checkpointer = stage.checkpointer(subdir, keep_last=settings.keep_last)
    # One metrics section per training run (kfold: "kfold/fold_3"): steps restart per fold.
    section = stage.section if subdir is None else f"{stage.section}/{subdir}"
    loop_settings = LoopSettings(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        accum_steps=settings.accum_steps,
        clip_grad=settings.clip_grad,
        checkpoint_every=settings.checkpoint_every,
        log_every=settings.log_every,
        num_workers=settings.num_workers,
    )
    plan = plan_loop(stage, loop_settings, len(train_set), max_steps, section)
    last_matrix: dict[str, torch.Tensor] = {}

    def evaluate(epoch: int) -> dict[str, float]:
        results, matrix = evaluate_classifier(
            stage.run, classifier, transform, eval_set, num_classes, settings.batch_size
        )
        last_matrix["matrix"] = matrix
        return results

    stage.info(
        f"{where}{len(train_set)} train / {len(eval_set)} eval items, {num_classes} classes, "
        f"{plan.run_until} of {plan.total_steps} steps, peak lr {peak_lr:.3g}, encoder {source or 'fresh'}"
    )
    result = classifier_loop(
        stage,
        model=classifier,
        objective=objective,
        transform=transform,
        optimizer=optimizer,
        dataset=train_set,
        settings=loop_settings,
        plan=plan,
        lr_at=WarmupCosineSchedule(peak_lr, settings.min_lr, settings.warmup_epochs),
        checkpointer=checkpointer,
        evaluate=evaluate,
        section=section,
    )
    class_names = list(stage.components.dataset().class_names)
    if stage.run.is_main and "matrix" in last_matrix:
        name = section.replace("/", "_")
        stage.plots.confusion(
            last_matrix["matrix"], class_names, f"{name}_confusion.png"
        )
        stage.plots.loss_curves(stage.metrics.jsonl_path, section)
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
        "last_checkpoint": str(checkpointer.last_path),
        "best_checkpoint": str(checkpointer.best_path),
        "steps_per_s": round(result.steps_per_s, 4),
        "data_wait_share": round(result.data_wait_share, 4),
        "confusion_matrix": (
            last_matrix["matrix"].tolist() if "matrix" in last_matrix else None
        ),
    }


@recipe_registry.register("finetune", version="1.0")
def finetune(
    stage: Stage,
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
) -> StepResult:
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
            clip; masked bins hold a raw 0 normalised, as in AudioMAE); 0 = off.
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
        locals(), others=("stage", "train_folds", "eval_folds")
    )
    dataset = stage.components.dataset()
    train_folds, eval_folds = resolve_split(stage, dataset, train_folds, eval_folds)
    summary = train_classifier(
        stage,
        settings,
        split_by_folds(dataset, train_folds),
        split_by_folds(dataset, eval_folds),
        max_steps=stage.max_steps,
    )
    summary.update(train_folds=train_folds, eval_folds=eval_folds)
    # Decided from the results, not the file system: every rank must agree.
    best = summary["best_accuracy"] is not None
    chosen = summary["best_checkpoint" if best else "last_checkpoint"]
    return StepResult(summary, Handoff(classifier_checkpoint=chosen))
