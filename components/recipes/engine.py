"""What a training step is made of: the learning-rate rule, parameter groups, one optimizer step.

Each training recipe writes its loop out in its own module (``pretrain.pretrain_loop``,
``finetune.classifier_loop``). The parts of a step a researcher changes live here, right
before them: the warm-up + cosine rule (``WarmupCosineSchedule``), AdamW parameter groups
(``param_groups_weight_decay``), the lr scaling rule, and ``accumulate_and_step``, one
optimizer step over ``accum_steps`` micro-batches under AMP and DDP that applies only finite
gradients. The loops' bookkeeping (the plan of steps per epoch, the device window of
losses, when to check, progress lines, checkpoint payload and restore) is plumbing:
``components.loop_support``, in the support section of an emitted script.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from components.errors import UsageError
from components.loop_support import LoopPlan, LoopSettings, StepOutcome, Trainables
from components.recipes.guards import BatchGuard
from components.runtime import RunRecord, Stage


def warmup_cosine_lr(
    step: float,
    *,
    base_lr: float,
    min_lr: float,
    warmup_steps: float,
    total_steps: float,
) -> float:
    """Learning rate at position ``step``: linear warm-up from 0, then half a cosine to ``min_lr``.

    The official MAE / AudioMAE / AudioMAE++ rule (``util/lr_sched.adjust_learning_rate``):
    ``base_lr * step / warmup_steps`` during warm-up (0 at the very first step), then
    ``min_lr + (base_lr - min_lr) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2``.
    The unit is the caller's: ``WarmupCosineSchedule`` passes fractional epochs, as the
    official loops do; any one unit for all three arguments gives the same curve. A pure
    function of the position, so resuming needs no scheduler object to restore.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return min_lr
    elapsed = min(step, total_steps) - warmup_steps
    return min_lr + (base_lr - min_lr) * 0.5 * (
        1.0 + math.cos(math.pi * elapsed / decay_steps)
    )


@dataclass(frozen=True)
class WarmupCosineSchedule:
    """``warmup_cosine_lr`` over fractional epochs, placed by micro-batch as the official loops.

    Optimizer step ``s`` (0-based) of epoch ``e`` starts at micro-batch ``s * accum_steps``
    of the epoch's ``micro_batches_per_epoch``, so its learning rate is the rule's value at
    epoch ``e + s * accum_steps / micro_batches_per_epoch`` (AudioMAE's
    ``data_iter_step / len(data_loader) + epoch``, set on the first micro-batch of each
    accumulation window). When the micro-batches of an epoch are not a multiple of
    ``accum_steps``, the last ones are not used (AudioMAE computes and then discards them:
    ``zero_grad`` at the start of the next epoch) but still count in the epoch's length.
    Under ``--fit-schedule`` the position runs ``plan.schedule_speed`` times faster, so the
    whole schedule fits into the ``--steps`` cap.
    """

    peak_lr: float
    min_lr: float = 0.0
    warmup_epochs: float = 0.0

    def __call__(self, step: int, plan: "LoopPlan") -> float:
        epoch, within = divmod(step, plan.steps_per_epoch)
        micro_batches = (
            plan.micro_batches_per_epoch or plan.steps_per_epoch * plan.accum_steps
        )
        return warmup_cosine_lr(
            (within * plan.accum_steps / micro_batches + epoch) * plan.schedule_speed,
            base_lr=self.peak_lr,
            min_lr=self.min_lr,
            warmup_steps=self.warmup_epochs,
            total_steps=plan.total_steps / plan.steps_per_epoch,
        )


def check_ranges(stage: Stage, checks: dict[str, tuple[Any, bool]]) -> None:
    """``{name: (value, is_valid)}``: an invalid value is a user error naming its flag.

    A float must also be finite: ``inf`` passes ``lr > 0`` and would train into NaN.
    """
    for name, (value, valid) in checks.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(
                f"--{stage.section}.{name} must be a finite number, got {value!r}"
            )
        if not valid:
            raise UsageError(f"--{stage.section}.{name} is out of range: {value!r}")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply ``lr`` to every group, times the group's ``lr_scale`` (layer-wise decay)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def no_decay_parameter_names(
    model: nn.Module, no_weight_decay_list: tuple[str, ...] | set[str] = ()
) -> set[str]:
    """Parameters AdamW does not decay: every 1-d one (biases, norm weights), ``*.bias``, the list.

    timm's ``param_groups_weight_decay`` rule, which the official AudioMAE and AudioMAE++
    pre-training use with an empty list: tokens (``cls_token``, ``mask_token``) are decayed.
    """
    skip = set(no_weight_decay_list)
    return {
        name
        for name, p in model.named_parameters()
        if p.ndim <= 1 or name.endswith(".bias") or name in skip
    }


def param_groups_weight_decay(
    model: nn.Module,
    weight_decay: float,
    no_weight_decay_list: tuple[str, ...] | set[str] = (),
) -> list[dict[str, Any]]:
    """AdamW groups ``[no decay, decay]`` of the trainable parameters (timm / MAE pre-training).

    ``no_weight_decay_list`` names more parameters to leave undecayed, e.g.
    ``model.no_weight_decay()`` for timm's fine-tuning convention of undecayed tokens.
    """
    skip = no_decay_parameter_names(model, no_weight_decay_list)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name in skip else decay).append(parameter)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def scaled_learning_rate(
    lr: float | None, base_lr: float, effective_batch: int
) -> float:
    """MAE's rule: an explicit ``lr`` wins, else ``base_lr * effective_batch / 256``."""
    return float(lr) if lr is not None else base_lr * effective_batch / 256


def host_reads_are_free(device: torch.device) -> bool:
    """On the CPU the host computes every value itself: reading one waits for nothing."""
    return device.type == "cpu"


def discard_gradients_unless(
    keep: torch.Tensor, optimizer: torch.optim.Optimizer
) -> None:
    """Zero every gradient where the 0-dim bool ``keep`` is false, on the device (no host sync).

    A NaN gradient times 0 is still NaN, so ``masked_fill_``, not a multiply.
    """
    drop = ~keep
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is not None:
                parameter.grad.masked_fill_(drop, 0.0)


def gradients_finite(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """0-dim bool on the device: every gradient the optimizer would apply is finite (no host sync).

    A finite loss can still give NaN gradients (a square root at 0, an overflow), and under
    DDP one rank's NaN reaches every rank's gradients through the all-reduce while the other
    ranks' losses stay finite: checking the gradients keeps the weights finite on every rank.
    """
    checks = [
        torch.isfinite(parameter.grad).all()
        for group in optimizer.param_groups
        for parameter in group["params"]
        if parameter.grad is not None
    ]
    return torch.stack(checks).all() if checks else torch.ones((), dtype=torch.bool)


def effective_batch_size(
    run: RunRecord, batch_size: int, accum_steps: int, num_items: int
) -> int:
    """Samples per optimizer step over all ranks as the loop will take them, for the LR rule.

    A rank's batch is at most its shard of the data set, and accumulation at most the batches
    an epoch has, so a small data set gives a smaller effective batch than the settings say.
    (Out-of-range settings are clamped here; ``plan_loop`` reports them as user errors.)
    """
    settings = LoopSettings(
        epochs=1, batch_size=max(1, batch_size), accum_steps=max(1, accum_steps)
    )
    return LoopPlan.make(
        num_items, settings, run.dist.world_size, None
    ).samples_per_step


def accumulate_and_step(
    run: RunRecord,
    batches: Iterator[Any],
    *,
    objective: nn.Module,
    transform: nn.Module,
    parts: Trainables,
    guard: BatchGuard,
    lr: float,
    accum_steps: int,
    clip_grad: float | None,
) -> StepOutcome:
    """Accumulate ``accum_steps`` micro-batches and take one optimizer step at learning rate ``lr``.

    The loss and logs stay on the device (reading them would wait for the step to finish).
    A step whose loss or gradients are not finite is skipped where reading that is free (the
    CPU), and elsewhere has its gradients zeroed on the device (AdamW then still moves the
    weights by its momentum and weight decay): the weights stay finite either way, and the
    loop's next check stops the run before any checkpoint holds that step. Under fp16 the loss scaler checks the
    gradients itself (an overflow there only lowers the scale), so only the loss is checked.
    """
    optimizer, scaler = parts.optimizer, parts.scaler
    set_learning_rate(optimizer, lr)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=run.device)
    log_sums: dict[str, torch.Tensor] = {}
    wait = 0.0
    for micro in range(accum_steps):
        fetch = time.perf_counter()
        signals, labels, lengths = next(batches)
        wait += time.perf_counter() - fetch
        signals = signals.to(run.device, non_blocking=True)
        labels = labels.to(run.device, non_blocking=True)
        with torch.no_grad():
            features = transform(signals, lengths)
        guard.observe(features, lengths)
        # Only the last micro-batch all-reduces gradients under DDP.
        last_micro = micro == accum_steps - 1
        sync = (
            contextlib.nullcontext()
            if last_micro or not hasattr(objective, "no_sync")
            else objective.no_sync()
        )
        with sync:
            with run.autocast():
                loss, logs = objective(features, labels)
            scaler.scale(loss / accum_steps).backward()
        loss_sum += loss.detach().float()
        for key, value in logs.items():
            log_sums[key] = log_sums.get(key, 0.0) + value.detach().float()
    loss_mean = loss_sum / accum_steps
    logs = {k: v / accum_steps for k, v in log_sums.items()}
    finite = torch.isfinite(loss_mean)
    if not scaler.is_enabled():
        finite = finite & gradients_finite(optimizer)
    outcome = StepOutcome(loss_mean, logs, finite, wait)
    if not host_reads_are_free(loss_mean.device):
        discard_gradients_unless(finite, optimizer)
    elif not finite:  # the host computed it: skipping costs less than masking
        optimizer.zero_grad(set_to_none=True)
        return outcome
    if clip_grad is not None and clip_grad > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(parts.model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return outcome
