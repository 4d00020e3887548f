"""MAE pre-training: reconstruct masked patches, optionally with InfoNCE and uniformity terms.

AdamW (betas 0.9/0.95, weight decay 0.05 on every parameter with more than one dimension
except biases, tokens included), learning rate ``base_lr * effective_batch / 256`` unless
``lr`` is given, per-iteration linear warm-up from 0 then cosine decay, gradient accumulation
and clipping: the official AudioMAE / AudioMAE++ optimizer step (He et al., 2022; Huang et
al., 2022; the project's tests/test_recipe_parity.py restates it and checks this recipe).
The auxiliary terms pool the visible tokens of two independent maskings of each clip:
InfoNCE pulls the two views of a clip together against the other clips of the batch,
uniformity spreads clips over the sphere.
Under DDP both see the global batch (every rank's clips), as one process would.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

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
from components.objectives import MAEObjective
from components.plots import Plotter
from components.recipes.engine import (
    WarmupCosineSchedule,
    accumulate_and_step,
    check_ranges,
    effective_batch_size,
    param_groups_weight_decay,
    scaled_learning_rate,
)
from components.recipes.guards import BatchGuard
from components.registry import recipe_registry
from components.run_checkpoint import Checkpointer
from components.runtime import (
    Handoff,
    RunRecord,
    Stage,
    StepResult,
    StopRequested,
    split_by_folds,
)


def pretrain_loop(
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
    on_step: Callable[[int], None] | None = None,
) -> LoopResult:
    """Train ``objective`` over ``dataset`` for the ``plan.run_until`` optimizer steps ``plan_loop`` laid out.

    ``model`` is what checkpoints hold; ``objective`` wraps it (``forward(features, labels)
    -> (loss, logs)``) and is what DDP and ``torch.compile`` wrap. A checkpoint is written
    every ``checkpoint_every`` steps, at every epoch end, at the end and when SIGTERM/SIGINT
    asks to stop; ``--resume`` continues from the last one exactly. Losses are read back from
    the device only at checks (``DeviceWindow``), and a non-finite one stops the run before
    any checkpoint holds its step. ``epochs=0`` trains nothing and saves the initial weights.
    """
    run = stage.run
    wrapped = prepare_objective(stage, objective, transform, dataset)  # compiled, DDP
    parts = Trainables(model, optimizer, run.grad_scaler())
    guard = BatchGuard(stage, transform, dataset)
    # epochs=0 is a fresh start by definition: a folder's earlier pre-training is not it
    start_step, state = (
        restore_training(stage, checkpointer, plan, parts)
        if plan.total_steps
        else (0, TrainState())
    )
    if plan.total_steps == 0:
        checkpointer.save(checkpoint_payload(stage, plan, 0, state, parts), step=0)
    window = DeviceWindow(run.device, run.dist)  # losses, summed on the device
    meter = ProgressMeter(stage.metrics, run.device, plan, stage.section)
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
                    stage.section,
                    totals,
                    step,
                    run.dist.world_size,
                    checkpointer.last_path,
                )
                meter.add(totals)
                checks.adapt(totals.step_seconds)
                stopping = totals.stop
            meter.step_done(done.wait)
            if on_step is not None:
                on_step(step)
            if checks.log_due(step):
                meter.log(step, lr_at(step - 1, plan))
                guard.report(step, stage.section)
            if stopping or checks.checkpoint_due(step, epoch_end):
                payload = checkpoint_payload(stage, plan, step, state, parts)
                checkpointer.save(payload, step=step)
            if stopping:
                raise StopRequested(
                    f"{stage.section}: stopped by {stage.stop.signal_name or 'another rank'} "
                    f"at step {step}; checkpoint saved"
                )
    return meter.result(step, start_step, state)


@recipe_registry.register("mae_pretrain", version="1.0")
def mae_pretrain(
    stage: Stage,
    /,
    *,
    epochs: int = 100,
    batch_size: int = 64,
    accum_steps: int = 1,
    base_lr: float = 1.5e-4,
    lr: float | None = None,
    min_lr: float = 0.0,
    warmup_epochs: float = 5.0,
    weight_decay: float = 0.05,
    skip_token_decay: bool = False,
    beta1: float = 0.9,
    beta2: float = 0.95,
    clip_grad: float | None = None,
    mask_ratio: float | None = None,
    norm_pix_loss: bool | None = None,
    infonce_weight: float = 0.0,
    infonce_temperature: float = 0.1,
    uniformity_weight: float = 0.0,
    uniformity_t: float = 2.0,
    train_folds: list[int] | None = None,
    num_workers: int = 4,
    checkpoint_every: int = 500,
    keep_last: int = 3,
    log_every: int = 20,
    plot_every: int = 0,
) -> StepResult:
    """Pre-train the spec's model as a masked autoencoder; hands on its encoder checkpoint.

    ``mask_ratio`` / ``norm_pix_loss`` default to the model's own settings; ``train_folds``
    to every fold (labels are not used). ``plot_every`` (steps, 0 = only at the end) draws
    masked input, reconstruction and target when matplotlib is installed.

    ``skip_token_decay`` (opt-in) leaves the model's tokens (``no_weight_decay()``: CLS and
    mask tokens) undecayed, timm's fine-tuning convention. The official pre-training decays
    them (timm's ``param_groups_weight_decay`` with an empty skip list), which over a long
    schedule shrinks them markedly; the default follows the official recipe.

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
        skip_token_decay: Exempt the CLS and mask tokens from weight decay (timm's
            fine-tuning convention); the official pre-training decays them.
        beta1: AdamW's first-moment decay (beta1).
        beta2: AdamW's second-moment decay (beta2; MAE uses 0.95).
        clip_grad: Clip the gradient norm to this value before each step; None does not
            clip.
        mask_ratio: Share of patches masked in pre-training (0-1); None takes the
            model's mask_ratio.
        norm_pix_loss: Reconstruct per-patch normalised targets; None takes the model's
            norm_pix_loss.
        infonce_weight: Weight of an InfoNCE term between two maskings of each clip,
            added to the reconstruction loss; 0 = off.
        infonce_temperature: Temperature of that InfoNCE term (lower = sharper
            contrast).
        uniformity_weight: Weight of a uniformity term that spreads clip embeddings over
            the sphere; 0 = off.
        uniformity_t: Scale t of the uniformity term, log mean exp(-t ||zi - zj||^2).
        train_folds: Folds to pre-train on (labels are not used); None takes every fold.
        num_workers: Data-loader worker processes per process (0 loads in the main
            process, simplest for debugging).
        checkpoint_every: Optimizer steps between checkpoints (one is also written at
            every epoch end and when the run stops).
        keep_last: Number of most recent checkpoints kept on disk (older ones are
            deleted).
        log_every: Optimizer steps between progress lines and metrics records.
        plot_every: Optimizer steps between reconstruction plots (masked input,
            reconstruction, target; needs matplotlib); 0 plots only at the end.
    """
    check_ranges(
        stage,
        {
            "base_lr": (base_lr, base_lr > 0),
            "lr": (lr, lr is None or lr > 0),
            "min_lr": (min_lr, min_lr >= 0),
            "warmup_epochs": (warmup_epochs, warmup_epochs >= 0),
            "weight_decay": (weight_decay, weight_decay >= 0),
            "beta1": (beta1, 0 <= beta1 < 1),
            "beta2": (beta2, 0 <= beta2 < 1),
            "clip_grad": (clip_grad, clip_grad is None or clip_grad > 0),
            "mask_ratio": (mask_ratio, mask_ratio is None or 0 <= mask_ratio < 1),
            "infonce_weight": (infonce_weight, infonce_weight >= 0),
            "uniformity_weight": (uniformity_weight, uniformity_weight >= 0),
            "infonce_temperature": (infonce_temperature, infonce_temperature > 0),
            "plot_every": (plot_every, plot_every >= 0),
        },
    )
    if infonce_weight > 0 and batch_size < 2:
        raise UsageError(
            f"--{stage.section}.infonce_weight needs batch_size >= 2 (negatives come from the batch)"
        )
    dataset = stage.components.dataset()
    if train_folds is not None:
        dataset = split_by_folds(dataset, train_folds)
    model = stage.components.model()
    transform = stage.components.transform()
    stage.components.check_fit(model, transform)
    objective = MAEObjective(
        model,
        mask_ratio=mask_ratio,
        norm_pix_loss=norm_pix_loss,
        infonce_weight=infonce_weight,
        infonce_temperature=infonce_temperature,
        uniformity_weight=uniformity_weight,
        uniformity_t=uniformity_t,
    )
    settings = LoopSettings(
        epochs=epochs,
        batch_size=batch_size,
        accum_steps=accum_steps,
        clip_grad=clip_grad,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        num_workers=num_workers,
    )
    effective_batch = effective_batch_size(
        stage.run, batch_size, accum_steps, len(dataset)
    )
    peak_lr = scaled_learning_rate(lr, base_lr, effective_batch)
    skipped = model.no_weight_decay() if skip_token_decay else ()
    optimizer = torch.optim.AdamW(
        param_groups_weight_decay(model, weight_decay, skipped),
        lr=peak_lr,
        betas=(beta1, beta2),
    )
    checkpointer = stage.checkpointer(keep_last=keep_last)
    plan = plan_loop(stage, settings, len(dataset), stage.max_steps)

    def on_step(step: int) -> None:
        if plot_every > 0 and step % plot_every == 0:
            plot_reconstruction(
                stage.run,
                stage.plots,
                model,
                transform,
                dataset,
                f"{stage.section}_reconstruction_{step:07d}.png",
                objective.mask_ratio,
                objective.norm_pix_loss,
            )

    if epochs == 0:
        stage.info(
            f"--{stage.section}.epochs 0: pre-training skipped; later steps use the randomly "
            f"initialised encoder (--seed {stage.run.options.seed}), a baseline for what pre-training adds"
        )
    else:
        stage.info(
            f"{len(dataset)} items, {plan.steps_per_epoch} steps/epoch, {plan.run_until} of {plan.total_steps} steps, "
            f"effective batch {effective_batch}, peak lr {peak_lr:.3g}"
        )
    result = pretrain_loop(
        stage,
        model=model,
        objective=objective,
        transform=transform,
        optimizer=optimizer,
        dataset=dataset,
        settings=settings,
        plan=plan,
        lr_at=WarmupCosineSchedule(peak_lr, min_lr, warmup_epochs),
        checkpointer=checkpointer,
        on_step=on_step,
    )
    plot_reconstruction(
        stage.run,
        stage.plots,
        model,
        transform,
        dataset,
        f"{stage.section}_reconstruction.png",
        objective.mask_ratio,
        objective.norm_pix_loss,
    )
    if stage.run.is_main:
        stage.plots.loss_curves(stage.metrics.jsonl_path, stage.section)
    encoder = str(checkpointer.last_path)
    summary = {
        "steps": result.step,
        "total_steps": result.total_steps,
        "final_loss": result.last_loss if math.isfinite(result.last_loss) else None,
        "peak_lr": peak_lr,
        "effective_batch": effective_batch,
        "steps_per_s": round(result.steps_per_s, 4),
        "data_wait_share": round(result.data_wait_share, 4),
        "encoder_checkpoint": encoder,
        "resumed_from": result.resumed_from,
    }
    return StepResult(summary, Handoff(encoder_checkpoint=encoder))


@torch.no_grad()
def plot_reconstruction(
    run: RunRecord,
    plots: Plotter,
    model: nn.Module,
    transform: nn.Module,
    dataset: Any,
    name: str,
    mask_ratio: float,
    norm_pix: bool,
) -> None:
    """Masked input / reconstruction / target of the data set's first item, as a PNG."""
    if not run.is_main or plots.pyplot() is None:
        return
    was_training = model.training
    model.eval()
    transform.eval()
    signal, _ = dataset[0]
    features = transform(signal.unsqueeze(0).to(run.device).float())
    # A private generator: plotting must not shift the training run's random stream.
    generator = torch.Generator(device=run.device).manual_seed(0)
    _, pred, mask = model(features, mask_ratio=mask_ratio, generator=generator)
    target = model.patchify(features)
    if (
        norm_pix
    ):  # the model predicts normalised patches: undo with the target's statistics
        pred = pred * (target.var(dim=-1, keepdim=True) + 1e-6).sqrt() + target.mean(
            dim=-1, keepdim=True
        )
    masked = target * (1 - mask.unsqueeze(-1))
    images = [model.unpatchify(t)[0, 0] for t in (masked, pred.float(), target)]
    plots.reconstruction(*images, name=name)
    model.train(was_training)
    transform.train(was_training)
