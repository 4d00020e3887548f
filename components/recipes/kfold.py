"""k-fold cross-validation (ESC-50's 5 folds): one fine-tune per held-out fold, mean ± std.

Each fold trains in ``<out>/<step>/fold_<k>/`` with its own checkpoints and writes its result
there when done, so ``--resume`` skips finished folds and resumes the interrupted one. Every
fold starts from the same seed-derived random stream whether or not earlier folds were skipped.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Literal

from components.data.base import folds_of, leave_one_fold_out
from components.errors import UsageError
from components.metrics import write_json_atomic
from components.recipes.finetune import finetune_settings_from, train_classifier
from components.recipes.guards import describe_data
from components.registry import recipe_registry
from components.runtime import (
    Stage,
    StepResult,
    derive_seed,
    seed_everything,
    split_by_folds,
)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation, as ESC-50 papers report across folds."""
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


@recipe_registry.register("kfold", version="1.0")
def kfold(
    stage: Stage,
    /,
    *,
    folds: list[int] | None = None,
    max_folds: int | None = None,
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
    num_workers: int = 4,
    checkpoint_every: int = 500,
    keep_last: int = 1,
    log_every: int = 20,
) -> StepResult:
    """Fine-tune once per held-out fold (``folds``, default all; ``max_folds`` keeps the first n).

    The other parameters are ``finetune``'s. Returns per-fold accuracies and their mean ± std.

    Args:
        folds: Folds to hold out in turn (one fine-tuning run each); None takes every
            fold of the data set.
        max_folds: Run only the first n of those folds (a quicker estimate); None runs
            them all.
        epochs: Passes over the training folds in each fold's run; the lr schedule spans
            them (k-fold always runs whole: --steps does not cap it).
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
        num_workers: Data-loader worker processes per process (0 loads in the main
            process, simplest for debugging).
        checkpoint_every: Optimizer steps between checkpoints (one is also written at
            every epoch end and when the run stops).
        keep_last: Number of most recent checkpoints kept per fold (older ones are
            deleted).
        log_every: Optimizer steps between progress lines and metrics records.
    """
    settings = finetune_settings_from(locals(), others=("stage", "folds", "max_folds"))
    dataset = stage.components.dataset()
    available = folds_of(dataset.records)
    # Folds the data set's own listing names (ESC-50's CSV) but that hold no clip here.
    listed = sorted(set(getattr(dataset, "listed_folds", available)) | set(available))
    chosen = list(folds) if folds is not None else listed
    unknown = sorted(set(chosen) - set(listed))
    if unknown and not stage.run.smoke:
        raise UsageError(
            f"--{stage.section}.folds: folds {unknown} do not exist; the data set has folds {available}"
        )
    chosen = [
        f for f in chosen if f in listed
    ] or available  # smoke data has its own folds
    if max_folds is not None:
        if max_folds < 1:
            raise UsageError(
                f"--{stage.section}.max_folds must be >= 1, got {max_folds}"
            )
        chosen = chosen[:max_folds]
    if len(available) < 2:
        raise UsageError(
            f"{stage.section}: cross-validation needs at least 2 folds, the data set has {available}"
        )
    if not stage.resume and stage.run.is_main:
        # A fresh run in a used folder: a later --resume must not take the old run's folds.
        for stale in stage.stage_dir.glob("fold_*/result.json"):
            stale.unlink()
    train_folds_of = {test: train for train, [test] in leave_one_fold_out(available)}
    skipped = [f for f in chosen if f not in available]
    if len(skipped) == len(chosen):
        raise UsageError(
            f"{stage.section}: none of folds {chosen} holds an item of {describe_data(dataset)}; "
            f"the data set has folds {available}"
        )
    if skipped:
        stage.warn(
            f"folds {skipped} of {describe_data(dataset)} hold no items: not evaluated "
            f"(the mean is over {len(chosen) - len(skipped)} of {len(chosen)} folds)"
        )
    per_fold: dict[str, dict[str, Any]] = {}
    for held_out in (f for f in chosen if f in available):
        result_path = stage.stage_dir / f"fold_{held_out}" / "result.json"
        done = (
            json.loads(result_path.read_text(encoding="utf-8"))
            if stage.resume and result_path.is_file()
            else None
        )
        # An evaluation protocol: --steps never cuts a fold short, a saved fold is final.
        if done is not None and done["steps"] >= done["total_steps"]:
            per_fold[str(held_out)] = done
            stage.info(f"fold {held_out} already done: accuracy {done['accuracy']:.4f}")
            continue
        seed_everything(
            derive_seed(
                stage.run.options.seed + 7919 * held_out,
                stage.run.dist.rank,
                stage.index,
            )
        )
        train_set = split_by_folds(dataset, train_folds_of[held_out])
        eval_set = split_by_folds(dataset, [held_out])
        result = train_classifier(
            stage, settings, train_set, eval_set, subdir=f"fold_{held_out}"
        )
        result.pop("confusion_matrix", None)
        per_fold[str(held_out)] = result
        if stage.run.is_main:
            write_json_atomic(result, result_path)
    scored = {f: r for f, r in per_fold.items() if r.get("accuracy") is not None}
    mean, std = mean_std([r["accuracy"] for r in scored.values()])
    held_out_items = Counter(record.fold for record in dataset.records)
    weighted = weighted_mean(
        [(r["accuracy"], held_out_items[int(f)]) for f, r in scored.items()]
    )
    stage.info(
        f"{len(scored)}-fold accuracy {mean:.4f} ± {std:.4f} (mean of folds); "
        f"{weighted:.4f} weighted by fold size ({fold_sizes(scored, held_out_items)})"
        + (f"; folds {skipped} not evaluated" if skipped else "")
    )
    return StepResult(
        {
            "folds": [int(f) for f in per_fold],
            "steps": sum(r["steps"] for r in per_fold.values()),
            "total_steps": sum(r["total_steps"] for r in per_fold.values()),
            "accuracy_per_fold": {f: r.get("accuracy") for f, r in per_fold.items()},
            "best_accuracy_per_fold": {
                f: r.get("best_accuracy") for f, r in per_fold.items()
            },
            "eval_items_per_fold": {f: held_out_items[int(f)] for f in per_fold},
            "accuracy_mean": mean,
            "accuracy_std": std,
            "accuracy_weighted_mean": weighted,
            "folds_skipped": skipped,
            "per_fold": per_fold,
        }
    )


def weighted_mean(values_and_weights: list[tuple[float, int]]) -> float:
    """The mean of values weighted by their item counts (the accuracy over all held-out items)."""
    total = sum(weight for _, weight in values_and_weights)
    if total <= 0:
        return float("nan")
    return sum(value * weight for value, weight in values_and_weights) / total


def fold_sizes(per_fold: dict[str, Any], items: Counter[int]) -> str:
    return ", ".join(f"fold {f}: {items[int(f)]}" for f in per_fold)
