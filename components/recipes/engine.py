"""The training loop shared by the recipes: schedule, accumulation, AMP, DDP, checkpoints, resume.

One loop serves MAE pre-training and fine-tuning; what differs is the ``objective`` module
(``forward(features, labels) -> (loss, logs)``) and the optional per-epoch ``evaluate``.
The loop is resumable at every optimizer step: the data order is a function of (seed,
epoch), the learning rate a function of the step, and the checkpoint holds every RNG state,
so a run killed at any moment continues exactly where its last checkpoint left it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from components.run_checkpoint import (
    CheckpointManager,
    atomic_link,
    capture_rng_state,
    load_model_weights,
    restore_rng_state,
)
from components.distributed import DistInfo, all_reduce_sum
from components.errors import UsageError
from components.metrics import format_progress_line, gpu_memory_gb
from components.recipes.guards import BatchGuard
from components.runtime import (
    NonFiniteLossError,
    RunContext,
    StopRequested,
    collate_signals,
    seed_everything,
)


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


def check_ranges(ctx: RunContext, checks: dict[str, tuple[Any, bool]]) -> None:
    """``{name: (value, is_valid)}``: an invalid value is a user error naming its flag.

    A float must also be finite: ``inf`` passes ``lr > 0`` and would train into NaN.
    """
    for name, (value, valid) in checks.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(
                f"--{ctx.section}.{name} must be a finite number, got {value!r}"
            )
        if not valid:
            raise UsageError(f"--{ctx.section}.{name} is out of range: {value!r}")


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


def gather_rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (rank order), so a resumed DDP run continues each stream."""
    state = capture_rng_state()
    if not info.enabled:
        return [state]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


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


def unused_parameter_names(
    ctx: RunContext, objective: nn.Module, transform: nn.Module, dataset: Any
) -> list[str]:
    """Trainable parameters that one forward/backward pass leaves without a gradient.

    DDP must be told about them (``find_unused_parameters``) or it waits for their gradients
    forever; asking DDP to search every step costs a graph traversal, so look once, up front.
    Runs on the first two items under a forked RNG, and leaves no gradients behind.
    """
    items = [dataset[i] for i in range(min(2, len(dataset)))]
    signals, labels, lengths = collate_signals(items)
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        was_training = objective.training
        objective.train()
        transform.train()
        with torch.no_grad():
            features = transform(signals.to(ctx.device), lengths)
        with ctx.autocast():
            loss, _ = objective(features, labels.to(ctx.device))
        loss.backward()
        objective.train(was_training)
    unused = [
        name
        for name, p in objective.named_parameters()
        if p.requires_grad and p.grad is None
    ]
    objective.zero_grad(set_to_none=True)
    return unused


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int
    accum_steps: int = 1
    clip_grad: float | None = None
    checkpoint_every: int = 200
    log_every: int = 10
    num_workers: int = 0


@dataclass
class LoopPlan:
    """How many samples, micro-batches and optimizer steps an epoch has on each rank."""

    batch_size: int
    accum_steps: int
    drop_last: bool
    steps_per_epoch: int
    total_steps: int
    run_until: int
    world_size: int = 1
    micro_batches_per_epoch: int = 0  # the loader's length; 0: steps * accum_steps
    schedule_steps: int = 0  # steps the lr schedule spans; 0: total_steps

    @property
    def samples_per_step(self) -> int:
        """Samples per optimizer step over all ranks (the effective batch)."""
        return self.batch_size * self.accum_steps * self.world_size

    @property
    def schedule_speed(self) -> float:
        """How much faster than the epochs the lr schedule runs: ``total / cap`` when
        ``--fit-schedule`` squeezes it into a ``--steps`` cap, else 1."""
        if not self.schedule_steps or not self.total_steps:
            return 1.0
        return self.total_steps / self.schedule_steps

    def describe_cap(self, section: str) -> str | None:
        """One line when ``--steps`` stops this stage before its schedule ends (None otherwise)."""
        if self.run_until >= self.total_steps:
            return None
        if self.schedule_steps == self.run_until:
            return (
                f"--steps {self.run_until}: {section} takes {self.run_until} of its {self.total_steps} "
                "steps; --fit-schedule squeezes its warm-up and cosine into them"
            )
        return (
            f"--steps {self.run_until}: {section} stops at step {self.run_until} of {self.total_steps}, "
            "before its lr schedule ends (warm-up and cosine are laid out over all "
            f"{self.total_steps}); pass --fit-schedule to fit the schedule to the cap"
        )

    @classmethod
    def make(
        cls,
        num_items: int,
        settings: LoopSettings,
        world_size: int,
        max_steps: int | None,
        fit_schedule: bool = False,
    ) -> "LoopPlan":
        """``max_steps`` caps the optimizer steps; ``fit_schedule`` lays the lr schedule over
        the capped steps instead of over all epochs. ``epochs=0`` plans no step at all.
        """
        if settings.batch_size < 1 or settings.accum_steps < 1 or settings.epochs < 0:
            raise ValueError("batch_size and accum_steps must be >= 1, epochs >= 0")
        # Items per rank as the sampler deals them with drop_last: the remainder over the
        # ranks is dropped, and a set smaller than the world is padded to one item per rank.
        shard = max(1, num_items // world_size)
        batch_size = min(settings.batch_size, shard)
        batches = shard // batch_size
        accum = min(settings.accum_steps, batches)
        steps_per_epoch = batches // accum
        total = steps_per_epoch * settings.epochs
        run_until = total if max_steps is None else min(total, max_steps)
        return cls(
            batch_size,
            accum,
            True,
            steps_per_epoch,
            total,
            run_until,
            world_size,
            micro_batches_per_epoch=batches,
            schedule_steps=run_until if fit_schedule else total,
        )


def effective_batch_size(
    ctx: RunContext, batch_size: int, accum_steps: int, num_items: int
) -> int:
    """Samples per optimizer step over all ranks as the loop will take them, for the LR rule.

    A rank's batch is at most its shard of the data set, and accumulation at most the batches
    an epoch has, so a small data set gives a smaller effective batch than the settings say.
    (Out-of-range settings are clamped here; ``TrainLoop`` reports them as user errors.)
    """
    settings = LoopSettings(
        epochs=1, batch_size=max(1, batch_size), accum_steps=max(1, accum_steps)
    )
    return LoopPlan.make(
        num_items, settings, ctx.dist.world_size, None
    ).samples_per_step


STOP_CHECK_SECONDS = 5.0
"""Under DDP the ranks agree on a stop only when they sync, so they sync at least this often:
a preemption grace period is ~30 s, and the stop checkpoint must fit into it."""


@dataclass(frozen=True)
class WindowTotals:
    """What one host sync reads back about the optimizer steps since the previous one."""

    steps: int
    loss_sum: float  # per step: the loss averaged over the ranks
    last_loss: float  # the same, of the window's last step
    logs: dict[str, float]  # this rank's sums of the objective's logs
    stop: bool  # a rank was asked to stop (every rank reads the same)
    step_seconds: (
        float  # wall time per step since the previous sync, averaged over ranks
    )
    first_bad_step: (
        int  # the first step whose loss was not finite, on any rank; 0: none
    )
    bad_loss: float  # that step's loss
    bad_rank: int


class DeviceWindow:
    """Losses and logs of the steps since the last host sync, summed on the device.

    A training step adds to these sums without waiting for the device; ``sync`` is the one
    device-to-host read of a window (and under DDP its one all-reduce). The loop calls it at
    the log interval and before every checkpoint, evaluation and the end, so no checkpoint is
    written before every step it holds was seen to be finite.
    """

    def __init__(self, device: torch.device, info: DistInfo) -> None:
        self.device, self.info = device, info
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.started = time.perf_counter()
        zero = torch.zeros((), device=self.device)
        self.loss_sum, self.last_loss, self.first_bad, self.bad_loss = (
            zero,
            zero,
            zero,
            zero,
        )
        self.logs: dict[str, torch.Tensor] = {}

    def add(self, step: int, loss: torch.Tensor, logs: dict[str, torch.Tensor]) -> None:
        """Step ``step``'s mean loss and logs (0-dim float tensors on the device)."""
        first = ~torch.isfinite(loss) & (self.first_bad == 0)
        self.first_bad = torch.where(first, step, self.first_bad)
        self.bad_loss = torch.where(first, loss, self.bad_loss)
        self.loss_sum = self.loss_sum + loss
        self.last_loss = loss
        for key, value in logs.items():
            self.logs[key] = self.logs.get(key, 0.0) + value
        self.steps += 1

    def sync(self, stop_requested: bool) -> WindowTotals:
        """Read the window back (summed over ranks where it matters) and start a new one."""
        world, rank = self.info.world_size, self.info.rank
        # One slot per rank for the first bad step and its loss: a sum then keeps each rank's own.
        slots = torch.zeros(2 * world, device=self.device)
        slots[rank], slots[world + rank] = self.first_bad, self.bad_loss
        host = [float(stop_requested), time.perf_counter() - self.started]
        shared = torch.cat(
            [
                torch.stack([self.loss_sum, self.last_loss]),
                torch.tensor(host, device=self.device),
                slots,
            ]
        )
        own = [self.logs[key] for key in self.logs]
        values = torch.cat(
            [all_reduce_sum(shared, self.info), torch.stack(own).reshape(-1)]
            if own
            else [all_reduce_sum(shared, self.info)]
        ).tolist()
        loss_sum, last_loss, stop, seconds = values[:4]
        bad_steps, bad_losses = values[4 : 4 + world], values[4 + world : 4 + 2 * world]
        bad = [(int(s), r) for r, s in enumerate(bad_steps) if s > 0]
        first_bad, bad_rank = min(bad) if bad else (0, 0)
        totals = WindowTotals(
            steps=self.steps,
            loss_sum=loss_sum / world,
            last_loss=last_loss / world,
            logs=dict(zip(self.logs, values[4 + 2 * world :])),
            stop=stop > 0,
            step_seconds=seconds / world / max(1, self.steps),
            first_bad_step=first_bad,
            bad_loss=bad_losses[bad_rank],
            bad_rank=bad_rank,
        )
        self.reset()
        return totals


@dataclass
class LoopResult:
    step: int
    total_steps: int
    last_loss: float
    best_metric: float | None
    last_eval: dict[str, float] = field(default_factory=dict)
    steps_per_s: float = 0.0
    data_wait_share: float = 0.0
    resumed_from: int | None = None


class TrainLoop:
    """Runs ``objective`` over ``dataset`` for ``settings.epochs``, or ``max_steps`` steps.

    Training stages pass ``ctx.max_steps`` (``--steps``) as ``max_steps``; evaluation
    protocols that train (k-fold fine-tunes) pass None and run whole. ``epochs=0`` trains
    nothing and saves the initial weights as the stage's checkpoint.

    ``model`` is what checkpoints hold; ``objective`` wraps it (and is what DDP and
    ``torch.compile`` wrap). ``evaluate(epoch)`` runs after every epoch and at the end; when
    it returns ``best_key``, the best checkpoint is linked as ``best.pt``. Metrics and progress
    lines go under ``metrics_section`` (default: the step's section; ``kfold`` names each fold).
    """

    def __init__(
        self,
        ctx: RunContext,
        *,
        model: nn.Module,
        objective: nn.Module,
        transform: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Any,
        settings: LoopSettings,
        lr_at: Callable[[int, LoopPlan], float],
        manager: CheckpointManager,
        evaluate: Callable[[int], dict[str, float]] | None = None,
        best_key: str | None = None,
        find_unused_parameters: bool = False,
        on_step: Callable[[int], None] | None = None,
        metrics_section: str | None = None,
        max_steps: int | None = None,
    ) -> None:
        self.ctx, self.model, self.transform, self.optimizer = (
            ctx,
            model,
            transform,
            optimizer,
        )
        self.dataset, self.settings, self.lr_at, self.manager = (
            dataset,
            settings,
            lr_at,
            manager,
        )
        self.evaluate, self.best_key, self.on_step = evaluate, best_key, on_step
        self.metrics_section = metrics_section or ctx.section
        if settings.epochs < 0:
            raise UsageError(
                f"--{ctx.section}.epochs must be >= 0, got {settings.epochs}"
            )
        for name in (
            "batch_size",
            "accum_steps",
            "checkpoint_every",
            "log_every",
        ):
            if getattr(settings, name) < 1:
                raise UsageError(
                    f"--{ctx.section}.{name} must be >= 1, got {getattr(settings, name)}"
                )
        if settings.num_workers < 0:
            raise UsageError(
                f"--{ctx.section}.num_workers must be >= 0, got {settings.num_workers}"
            )
        self.plan = LoopPlan.make(
            len(dataset),
            settings,
            ctx.dist.world_size,
            max_steps,
            fit_schedule=bool(ctx.options.fit_schedule),
        )
        cap = self.plan.describe_cap(self.metrics_section)
        if cap is not None:
            ctx.info(cap)
        if ctx.dist.enabled and not find_unused_parameters:
            unused = unused_parameter_names(ctx, objective, transform, dataset)
            if unused:
                ctx.info(
                    f"{len(unused)} parameters get no gradient (e.g. {unused[0]}); DDP will look for unused parameters"
                )
            find_unused_parameters = bool(unused)
        self.objective = ctx.distribute(
            ctx.compile(objective), find_unused_parameters=find_unused_parameters
        )
        self.scaler = ctx.grad_scaler()
        self.guard = BatchGuard(ctx, transform, dataset)
        self.best_metric: float | None = None
        self.last_eval: dict[str, float] = {}
        self.evaluated_at = -1  # step of the last evaluation
        self.pending_eval = False  # stopped at an epoch end before evaluating it

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, step: int, pending_eval: bool) -> dict[str, Any]:
        return {
            "section": self.ctx.section,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": {
                "name": "warmup_cosine",
                "total_steps": self.plan.total_steps,
                "schedule_steps": self.plan.schedule_steps,
                "next_step": step,
            },
            "epoch": step // self.plan.steps_per_epoch,
            "rng": gather_rng_states(self.ctx.dist),
            "best_metric": self.best_metric,
            "last_eval": dict(self.last_eval),
            "evaluated_at": self.evaluated_at,
            "pending_eval": pending_eval,
            "config": dataclasses.asdict(self.ctx.config),
        }

    def _save(self, step: int, best: bool = False, pending_eval: bool = False) -> None:
        payload = self._payload(
            step, pending_eval
        )  # every rank: the RNG gather is a collective
        self.manager.save(payload, step=step, best=best)

    def _restore(self) -> int:
        payload = self.manager.load_last() if self.ctx.resume else None
        if payload is None:
            return 0
        load_model_weights(self.model, payload, self.manager.last_path)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        self.best_metric = payload.get("best_metric")
        self.last_eval = dict(payload.get("last_eval") or {})
        self.evaluated_at = int(payload.get("evaluated_at", -1))
        self.pending_eval = bool(payload.get("pending_eval", False))
        laid_out = (payload.get("scheduler") or {}).get("schedule_steps")
        if laid_out is not None and laid_out != self.plan.schedule_steps:
            self.ctx.warn(
                f"{self.metrics_section}: the lr schedule was laid over {laid_out} steps and is now laid "
                f"over {self.plan.schedule_steps} (another --steps or --fit-schedule): the learning "
                "rate jumps at the resumed step"
            )
        states = payload["rng"]
        if len(states) == self.ctx.dist.world_size:
            restore_rng_state(states[self.ctx.dist.rank])
        else:
            self.ctx.info(
                f"world size changed ({len(states)} -> {self.ctx.dist.world_size}): random streams restart"
            )
            seed_everything(self.ctx.stage_seed + int(payload["step"]))
        self.ctx.info(
            f"resumed from {self.manager.last_path} at step {payload['step']}"
        )
        return int(payload["step"])

    # ------------------------------------------------------------------ the loop
    def _run_evaluation(self, epoch: int, step: int) -> bool:
        """Evaluate, log, and say whether this is the best result so far."""
        if self.evaluate is None:
            return False
        results = self.evaluate(epoch)
        self.evaluated_at = step
        self.last_eval = {k: float(v) for k, v in results.items()}
        self.ctx.metrics.log(self.metrics_section, step, self.last_eval, kind="eval")
        shown = "  ".join(f"{k} {v:.4f}" for k, v in self.last_eval.items())
        self.ctx.info(f"eval after step {step} (epoch {epoch + 1}): {shown}")
        if self.best_key is None or self.best_key not in self.last_eval:
            return False
        value = self.last_eval[self.best_key]
        if self.best_metric is None or value > self.best_metric:
            self.best_metric = value
            return True
        return False

    def _evaluate_and_mark_best(self, step: int) -> None:
        """Evaluate outside an epoch-end save (end of a capped run, after a restart): link best.pt to last.pt."""
        if (
            self._run_evaluation(
                max(0, step - 1) // max(1, self.plan.steps_per_epoch), step
            )
            and self.ctx.is_main
        ):
            if self.manager.last_path.exists():
                atomic_link(self.manager.last_path, self.manager.best_path)
        self.objective.train()
        self.transform.train()

    def _sync_due(
        self, step: int, start_step: int, epoch_end: int, unsynced: int, every: int
    ) -> bool:
        """Whether step ``step`` reads its window back: every rank computes the same answer.

        At the log interval, the first step, before every checkpoint and evaluation, and at the
        end; under DDP also every ``every`` steps, so a stop request (which the ranks can only
        agree on at a sync) is acted on within ``STOP_CHECK_SECONDS``. A single process reads
        its own stop flag after every step, at no cost.
        """
        settings = self.settings
        return (
            step % settings.log_every == 0
            or step % settings.checkpoint_every == 0
            or step in (start_step + 1, epoch_end, self.plan.run_until)
            or unsynced >= every
            or (self.ctx.stop.requested and not self.ctx.dist.enabled)
        )

    def _sync_interval(self, step_seconds: float) -> int:
        """Steps until the next sync: the log interval, or fewer under DDP when steps are slow."""
        if not self.ctx.dist.enabled:
            return self.settings.log_every
        fit = int(STOP_CHECK_SECONDS / max(step_seconds, 1e-9))
        return max(1, min(self.settings.log_every, fit))

    def _raise_if_non_finite(self, totals: WindowTotals, step: int) -> None:
        if not totals.first_bad_step:
            return
        where = f"step {totals.first_bad_step}"
        if totals.first_bad_step != step:
            where += f" (found at the check of steps {step - totals.steps + 1}-{step})"
        if self.ctx.dist.world_size > 1:
            where += f" on rank {totals.bad_rank}"
        raise NonFiniteLossError(
            f"{self.ctx.section}: the loss became {totals.bad_loss} at {where}; stopped. The last good "
            f"checkpoint ({self.manager.last_path}) is kept. Lower the learning rate, set "
            f"--{self.ctx.section}.clip_grad, or train in bf16/fp32 instead of fp16"
        )

    def run(self) -> LoopResult:
        ctx, plan, settings = self.ctx, self.plan, self.settings
        # epochs=0 is a fresh start by definition: a folder's earlier pre-training is not it
        start_step = self._restore() if plan.total_steps else 0
        step = start_step
        self.objective.train()
        self.transform.train()
        last_loss = float("nan")
        window_loss, window_steps, window_time, window_wait, window_cpu = (
            0.0,
            0,
            0.0,
            0.0,
            0.0,
        )
        window_logs: dict[str, float] = {}
        total_time, total_wait = 0.0, 0.0
        device_window = DeviceWindow(ctx.device, ctx.dist)
        sync_every = 1  # steps between host syncs; set at each sync from the step time
        if self.pending_eval:  # the evaluation a SIGTERM at an epoch end postponed
            self._evaluate_and_mark_best(step)
        if plan.total_steps == 0:
            self._save(0)  # epochs=0: the initial weights are this stage's result
        while step < plan.run_until:
            epoch = step // plan.steps_per_epoch
            seen = (
                (step - epoch * plan.steps_per_epoch)
                * plan.accum_steps
                * plan.batch_size
            )
            loader = ctx.loader(
                self.dataset,
                plan.batch_size,
                shuffle=True,
                epoch=epoch,
                start=seen,
                drop_last=plan.drop_last,
                num_workers=settings.num_workers,
            )
            batches = iter(loader)
            epoch_end = (epoch + 1) * plan.steps_per_epoch
            while step < min(epoch_end, plan.run_until):
                started, cpu_started = time.perf_counter(), time.process_time()
                loss, logs, wait = self._optimizer_step(batches, step)
                step += 1
                device_window.add(step, loss, logs)
                stopping = False
                if self._sync_due(
                    step, start_step, epoch_end, device_window.steps, sync_every
                ):
                    totals = device_window.sync(ctx.stop.requested)
                    self._raise_if_non_finite(totals, step)
                    stopping, last_loss = totals.stop, totals.last_loss
                    window_loss += totals.loss_sum
                    for key, value in totals.logs.items():
                        window_logs[key] = window_logs.get(key, 0.0) + value
                    sync_every = self._sync_interval(totals.step_seconds)
                elapsed = time.perf_counter() - started
                window_steps += 1
                window_time += elapsed
                window_wait += wait
                window_cpu += (
                    time.process_time() - cpu_started
                )  # CPU seconds of this process, all threads
                total_time += elapsed
                total_wait += wait
                if self.on_step is not None:
                    self.on_step(step)
                if (
                    step % settings.log_every == 0
                    or step == plan.run_until
                    or step == start_step + 1
                ):
                    lr = self.lr_at(step - 1, plan)
                    values = {
                        "loss": window_loss / window_steps,
                        **{k: v / window_steps for k, v in window_logs.items()},
                    }
                    rate = plan.samples_per_step * window_steps / max(window_time, 1e-9)
                    eta = (plan.run_until - step) * window_time / window_steps
                    ctx.metrics.log(
                        self.metrics_section,
                        step,
                        {
                            **values,
                            "lr": lr,
                            "samples_per_s": rate,
                            "data_wait_share": window_wait / max(window_time, 1e-9),
                            "cpu_s_per_step": window_cpu / window_steps,
                        },
                    )
                    self.guard.report(step, self.metrics_section)
                    ctx.metrics.progress(
                        format_progress_line(
                            self.metrics_section,
                            step,
                            plan.run_until,
                            {**values, "lr": lr},
                            rate,
                            eta,
                            gpu_memory_gb(ctx.device),
                        )
                    )
                    (
                        window_loss,
                        window_steps,
                        window_time,
                        window_wait,
                        window_cpu,
                        window_logs,
                    ) = (0.0, 0, 0.0, 0.0, 0.0, {})
                best = False
                if step == epoch_end and not stopping:
                    best = self._run_evaluation(epoch, step)
                    self.objective.train()
                    self.transform.train()
                if (
                    stopping
                    or step == epoch_end
                    or step % settings.checkpoint_every == 0
                    or step == plan.run_until
                ):
                    # Preemption leaves seconds: evaluate after the restart instead of now.
                    self._save(
                        step,
                        best=best,
                        pending_eval=stopping
                        and step == epoch_end
                        and self.evaluate is not None,
                    )
                if stopping:
                    raise StopRequested(
                        f"{ctx.section}: stopped by {ctx.stop.signal_name or 'another rank'} at step {step}; checkpoint saved"
                    )
        if self.evaluate is not None and self.evaluated_at != step:
            self._evaluate_and_mark_best(step)
        return LoopResult(
            step=step,
            total_steps=plan.total_steps,
            last_loss=last_loss,
            best_metric=self.best_metric,
            last_eval=dict(self.last_eval),
            steps_per_s=(step - start_step) / total_time if total_time > 0 else 0.0,
            data_wait_share=total_wait / total_time if total_time > 0 else 0.0,
            resumed_from=start_step if start_step else None,
        )

    def _optimizer_step(
        self, batches: Any, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        """Accumulate ``accum_steps`` micro-batches and take one optimizer step.

        Returns the mean loss and the objective's mean logs (0-dim tensors, left on the device:
        reading them would wait for the step to finish) and the seconds spent waiting for data.
        A step whose loss is not finite is skipped where reading the loss is free (the CPU), and
        elsewhere has its gradients zeroed on the device: the weights stay finite either way
        until the loop's next check stops the run.
        """
        ctx, plan = self.ctx, self.plan
        set_learning_rate(self.optimizer, self.lr_at(step, plan))
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=ctx.device)
        log_sums: dict[str, torch.Tensor] = {}
        wait = 0.0
        for micro in range(plan.accum_steps):
            fetch = time.perf_counter()
            signals, labels, lengths = next(batches)
            wait += time.perf_counter() - fetch
            signals = signals.to(ctx.device, non_blocking=True)
            labels = labels.to(ctx.device, non_blocking=True)
            with torch.no_grad():
                features = self.transform(signals, lengths)
            self.guard.observe(features, lengths)
            last_micro = micro == plan.accum_steps - 1
            # Only the last micro-batch all-reduces gradients under DDP.
            sync = (
                contextlib.nullcontext()
                if last_micro or not hasattr(self.objective, "no_sync")
                else self.objective.no_sync()
            )
            with sync:
                with ctx.autocast():
                    loss, logs = self.objective(features, labels)
                self.scaler.scale(loss / plan.accum_steps).backward()
            loss_sum += loss.detach().float()
            for key, value in logs.items():
                log_sums[key] = log_sums.get(key, 0.0) + value.detach().float()
        loss_mean = loss_sum / plan.accum_steps
        logs = {k: v / plan.accum_steps for k, v in log_sums.items()}
        finite = torch.isfinite(loss_mean)
        if not host_reads_are_free(loss_mean.device):
            discard_gradients_unless(finite, self.optimizer)
        elif not finite:  # the host computed it: skipping costs less than masking
            self.optimizer.zero_grad(set_to_none=True)
            return loss_mean, logs, wait
        if self.settings.clip_grad is not None and self.settings.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_mean, logs, wait
