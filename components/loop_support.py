"""The training loops' bookkeeping: when to check, what a check reads, progress, checkpoints.

The recipes write their loops out (``pretrain.pretrain_loop``, ``finetune.classifier_loop``)
and call these: ``plan_loop`` checks the settings (``LoopSettings``) and lays out the steps
(``LoopPlan``: batches and optimizer steps per epoch and rank), ``prepare_objective``
wraps the objective for ``--compile`` and DDP, ``restore_training`` and
``checkpoint_payload`` are what ``--resume`` reads and every checkpoint holds (weights,
optimizer, loss scaler, every rank's RNG), ``DeviceWindow`` sums losses on the device between
host syncs, ``CheckSchedule`` says at which steps to sync, log and save, and
``raise_if_non_finite`` stops a run whose window held a step that was not applied.
``ProgressMeter`` writes the progress line and the metrics records. A loop is resumable at
every optimizer step: the data order is a function of (seed, epoch), the learning rate a
function of the step, and the checkpoint holds every RNG state, so a run killed at any
moment continues exactly where its last checkpoint left it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from components.distributed import DistInfo, all_reduce_sum
from components.errors import UsageError
from components.metrics import MetricsLogger, format_progress_line, gpu_memory_gb
from components.run_checkpoint import (
    Checkpointer,
    capture_rng_state,
    load_model_weights,
    restore_rng_state,
)
from components.runtime import (
    NonFiniteLossError,
    RunRecord,
    Stage,
    collate_signals,
    seed_everything,
)


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


@dataclass(frozen=True)
class StepOutcome:
    """One optimizer step, as ``accumulate_and_step`` leaves it on the device (nothing read back)."""

    loss: torch.Tensor  # the mean loss over the micro-batches (0-dim float)
    logs: dict[str, torch.Tensor]  # the objective's mean logs
    applied: (
        torch.Tensor
    )  # 0-dim bool: loss and gradients were finite, the step was taken
    wait: float  # seconds spent waiting for data


@dataclass(frozen=True)
class Trainables:
    """What a training loop changes: the model (as checkpoints hold it), its optimizer, the loss scaler."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def gather_rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (rank order), so a resumed DDP run continues each stream."""
    state = capture_rng_state()
    if not info.enabled:
        return [state]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def unused_parameter_names(
    run: RunRecord, objective: nn.Module, transform: nn.Module, dataset: Any
) -> list[str]:
    """Trainable parameters that one forward/backward pass leaves without a gradient.

    DDP must be told about them (``find_unused_parameters``) or it waits for their gradients
    forever; asking DDP to search every step costs a graph traversal, so look once, up front.
    Runs on the first two items under a forked RNG, and leaves no gradients behind.
    """
    items = [dataset[i] for i in range(min(2, len(dataset)))]
    signals, labels, lengths = collate_signals(items)
    devices = [run.device] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        was_training = objective.training
        objective.train()
        transform.train()
        with torch.no_grad():
            features = transform(signals.to(run.device), lengths)
        with run.autocast():
            loss, _ = objective(features, labels.to(run.device))
        loss.backward()
        objective.train(was_training)
    unused = [
        name
        for name, p in objective.named_parameters()
        if p.requires_grad and p.grad is None
    ]
    objective.zero_grad(set_to_none=True)
    return unused


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

    def add(self, step: int, done: StepOutcome) -> None:
        """Optimizer step ``step``: its mean loss and logs, and whether it was applied (all on the device)."""
        loss = done.loss
        first = ~done.applied & (self.first_bad == 0)
        self.first_bad = torch.where(first, step, self.first_bad)
        self.bad_loss = torch.where(first, loss, self.bad_loss)
        self.loss_sum = self.loss_sum + loss
        self.last_loss = loss
        for key, value in done.logs.items():
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
        # The first bad step; of the ranks that had it, one whose loss itself was not finite
        # (under DDP its NaN reached every rank's gradients through the all-reduce).
        bad = [
            (int(s), math.isfinite(bad_losses[r]), r)
            for r, s in enumerate(bad_steps)
            if s > 0
        ]
        first_bad, _, bad_rank = min(bad) if bad else (0, False, 0)
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
    """What a training loop reports: how far it got, its last loss and evaluation, its speed."""

    plan: LoopPlan
    step: int
    last_loss: float
    best_metric: float | None = None
    last_eval: dict[str, float] = field(default_factory=dict)
    steps_per_s: float = 0.0
    data_wait_share: float = 0.0
    resumed_from: int | None = None

    @property
    def total_steps(self) -> int:
        return self.plan.total_steps


def plan_loop(
    stage: Stage,
    settings: LoopSettings,
    num_items: int,
    max_steps: int | None,
    section: str | None = None,
) -> LoopPlan:
    """Check a loop's settings (an out-of-range one is a user error naming its flag), lay out its steps.

    ``max_steps`` caps the optimizer steps: training steps pass ``stage.max_steps``
    (``--steps``), evaluation protocols that train (k-fold fine-tunes) None. A line says when
    the cap stops the loop before its schedule ends.
    """
    flag = f"--{stage.section}"
    if settings.epochs < 0:
        raise UsageError(f"{flag}.epochs must be >= 0, got {settings.epochs}")
    for name in ("batch_size", "accum_steps", "checkpoint_every", "log_every"):
        if getattr(settings, name) < 1:
            raise UsageError(
                f"{flag}.{name} must be >= 1, got {getattr(settings, name)}"
            )
    if settings.num_workers < 0:
        raise UsageError(f"{flag}.num_workers must be >= 0, got {settings.num_workers}")
    plan = LoopPlan.make(
        num_items,
        settings,
        stage.run.dist.world_size,
        max_steps,
        fit_schedule=bool(stage.run.options.fit_schedule),
    )
    cap = plan.describe_cap(section or stage.section)
    if cap is not None:
        stage.info(cap)
    return plan


def prepare_objective(
    stage: Stage, objective: nn.Module, transform: nn.Module, dataset: Any
) -> nn.Module:
    """``objective`` as the loop steps it: compiled under ``--compile``, in DDP under torchrun.

    DDP is told up front about parameters no step trains (``unused_parameter_names``),
    instead of searching for them every step.
    """
    run = stage.run
    unused: list[str] = []
    if run.dist.enabled:
        unused = unused_parameter_names(run, objective, transform, dataset)
        if unused:
            stage.info(
                f"{len(unused)} parameters get no gradient (e.g. {unused[0]}); DDP will look for unused parameters"
            )
    return run.distribute(run.compile(objective), find_unused_parameters=bool(unused))


@dataclass
class TrainState:
    """What a loop found so far, saved in its checkpoints beside the step and the weights."""

    best_metric: float | None = None
    last_eval: dict[str, float] = field(default_factory=dict)
    evaluated_at: int = -1  # step of the last evaluation
    pending_eval: bool = False  # stopped at an epoch end before evaluating it


def checkpoint_payload(
    stage: Stage,
    plan: LoopPlan,
    step: int,
    state: TrainState,
    parts: Trainables,
) -> dict[str, Any]:
    """Everything ``--resume`` needs to continue exactly after optimizer step ``step``.

    Every rank calls it: gathering each rank's RNG state is a collective.
    """
    return {
        "section": stage.section,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "scheduler": {
            "name": "warmup_cosine",
            "total_steps": plan.total_steps,
            "schedule_steps": plan.schedule_steps,
            "next_step": step,
        },
        "epoch": step // plan.steps_per_epoch,
        "rng": gather_rng_states(stage.run.dist),
        "best_metric": state.best_metric,
        "last_eval": dict(state.last_eval),
        "evaluated_at": state.evaluated_at,
        "pending_eval": state.pending_eval,
        "config": dataclasses.asdict(stage.components.config),
    }


def restore_training(
    stage: Stage,
    checkpointer: Checkpointer,
    plan: LoopPlan,
    parts: Trainables,
    section: str | None = None,
) -> tuple[int, TrainState]:
    """The step to continue after and what the loop had found: from the stage's last checkpoint
    under ``--resume``, else step 0 and a fresh ``TrainState``.

    Weights, optimizer, scaler and every rank's random streams continue where they were; a
    world size other than the checkpoint's restarts the streams from the seed.
    """
    payload = checkpointer.load_last() if stage.resume else None
    if payload is None:
        return 0, TrainState()
    load_model_weights(parts.model, payload, checkpointer.last_path)
    parts.optimizer.load_state_dict(payload["optimizer"])
    parts.scaler.load_state_dict(payload["scaler"])
    laid_out = (payload.get("scheduler") or {}).get("schedule_steps")
    if laid_out is not None and laid_out != plan.schedule_steps:
        stage.warn(
            f"{section or stage.section}: the lr schedule was laid over {laid_out} steps and is now laid "
            f"over {plan.schedule_steps} (another --steps or --fit-schedule): the learning "
            "rate jumps at the resumed step"
        )
    dist_info = stage.run.dist
    states = payload["rng"]
    if len(states) == dist_info.world_size:
        restore_rng_state(states[dist_info.rank])
    else:
        stage.info(
            f"world size changed ({len(states)} -> {dist_info.world_size}): random streams restart"
        )
        seed_everything(stage.seed + int(payload["step"]))
    stage.info(f"resumed from {checkpointer.last_path} at step {payload['step']}")
    return int(payload["step"]), TrainState(
        best_metric=payload.get("best_metric"),
        last_eval=dict(payload.get("last_eval") or {}),
        evaluated_at=int(payload.get("evaluated_at", -1)),
        pending_eval=bool(payload.get("pending_eval", False)),
    )


def epoch_batches(
    stage: Stage, dataset: Any, plan: LoopPlan, step: int, num_workers: int
) -> Iterator[Any]:
    """The micro-batches of the epoch ``step`` falls in, from ``step`` on (a resumed run skips the rest)."""
    epoch = step // plan.steps_per_epoch
    seen = (step - epoch * plan.steps_per_epoch) * plan.accum_steps * plan.batch_size
    loader = stage.loader(
        dataset,
        plan.batch_size,
        shuffle=True,
        epoch=epoch,
        start=seen,
        drop_last=plan.drop_last,
        num_workers=num_workers,
    )
    return iter(loader)


class CheckSchedule:
    """When a loop reads its window back, logs and checkpoints: every rank decides alike.

    ``sync_due``: at the log interval, the first step, before every checkpoint and evaluation,
    and at the end; under DDP also every few steps (``adapt`` sets how many from the step
    time), so a stop request, which the ranks can only agree on at a sync, is acted on within
    ``STOP_CHECK_SECONDS``; a single process reads its own stop flag after every step, at no
    cost. ``log_due``: the log interval, the first step and the end. ``checkpoint_due``: every
    ``checkpoint_every`` steps, every epoch end and the end (and on a stop, which the loop adds).
    """

    def __init__(
        self,
        settings: LoopSettings,
        plan: LoopPlan,
        start_step: int,
        *,
        distributed: bool,
    ) -> None:
        self.settings, self.plan, self.start_step = settings, plan, start_step
        self.distributed = distributed
        self.every = 1  # steps between host syncs; set at each sync

    def sync_due(
        self, step: int, epoch_end: int, unsynced: int, stop_requested: bool
    ) -> bool:
        return (
            self.log_due(step)
            or self.checkpoint_due(step, epoch_end)
            or unsynced >= self.every
            or (stop_requested and not self.distributed)
        )

    def log_due(self, step: int) -> bool:
        return step % self.settings.log_every == 0 or step in (
            self.start_step + 1,
            self.plan.run_until,
        )

    def checkpoint_due(self, step: int, epoch_end: int) -> bool:
        return step % self.settings.checkpoint_every == 0 or step in (
            epoch_end,
            self.plan.run_until,
        )

    def adapt(self, step_seconds: float) -> None:
        """Sync at the log interval, or more often under DDP when steps are slow."""
        if not self.distributed:
            self.every = self.settings.log_every
            return
        fit = int(STOP_CHECK_SECONDS / max(step_seconds, 1e-9))
        self.every = max(1, min(self.settings.log_every, fit))


def raise_if_non_finite(
    section: str, totals: WindowTotals, step: int, world_size: int, kept: Path
) -> None:
    """Stop the run (exit 1) when a step of the window was not applied: its loss or gradients
    were not finite. ``kept`` is the last good checkpoint."""
    if not totals.first_bad_step:
        return
    where = f"step {totals.first_bad_step}"
    if totals.first_bad_step != step:
        where += f" (found at the check of steps {step - totals.steps + 1}-{step})"
    if world_size > 1:
        where += f" on rank {totals.bad_rank}"
    what = (
        f"the gradients became non-finite at {where} (its loss: {totals.bad_loss:.6g})"
        if math.isfinite(totals.bad_loss)
        else f"the loss became {totals.bad_loss} at {where}"
    )
    flag = section.split("/")[0]  # kfold/fold_3 -> --kfold.clip_grad
    raise NonFiniteLossError(
        f"{section}: {what}; stopped. The last good checkpoint ({kept}) is kept. Lower the "
        f"learning rate, set --{flag}.clip_grad, or train in bf16/fp32 instead of fp16"
    )


class ProgressMeter:
    """The loss, logs and timings of the steps since the last progress line, and the line itself.

    ``add`` takes what a host sync read back; ``step_done`` the wall, data-wait and CPU time of
    a step. ``log`` writes the metrics record (loss, logs, lr, samples/s, data-wait share,
    CPU seconds per step) and the progress line under ``section``, when
    ``CheckSchedule.log_due``.
    """

    def __init__(
        self, metrics: MetricsLogger, device: torch.device, plan: LoopPlan, section: str
    ) -> None:
        self.metrics, self.device, self.plan = metrics, device, plan
        self.section = section
        self.total_time = self.total_wait = 0.0
        self.last_loss = float("nan")
        self._reset()

    def _reset(self) -> None:
        self.loss, self.steps, self.time, self.wait, self.cpu = 0.0, 0, 0.0, 0.0, 0.0
        self.logs: dict[str, float] = {}

    def step_started(self) -> None:
        self._started, self._cpu_started = time.perf_counter(), time.process_time()

    def add(self, totals: WindowTotals) -> None:
        self.loss += totals.loss_sum
        self.last_loss = totals.last_loss
        for key, value in totals.logs.items():
            self.logs[key] = self.logs.get(key, 0.0) + value

    def step_done(self, wait: float) -> None:
        elapsed = time.perf_counter() - self._started
        self.steps += 1
        self.time += elapsed
        self.wait += wait
        self.cpu += (
            time.process_time() - self._cpu_started
        )  # CPU seconds of this process, all threads
        self.total_time += elapsed
        self.total_wait += wait

    def log(self, step: int, lr: float) -> None:
        """The record and progress line of the steps up to ``step`` (its learning rate ``lr``)."""
        plan, steps = self.plan, max(1, self.steps)
        values = {
            "loss": self.loss / steps,
            **{k: v / steps for k, v in self.logs.items()},
        }
        rate = plan.samples_per_step * steps / max(self.time, 1e-9)
        eta = (plan.run_until - step) * self.time / steps
        self.metrics.log(
            self.section,
            step,
            {
                **values,
                "lr": lr,
                "samples_per_s": rate,
                "data_wait_share": self.wait / max(self.time, 1e-9),
                "cpu_s_per_step": self.cpu / steps,
            },
        )
        self.metrics.progress(
            format_progress_line(
                self.section,
                step,
                plan.run_until,
                {**values, "lr": lr},
                rate,
                eta,
                gpu_memory_gb(self.device),
            )
        )
        self._reset()

    def result(self, step: int, start_step: int, state: TrainState) -> LoopResult:
        total = self.total_time
        return LoopResult(
            plan=self.plan,
            step=step,
            last_loss=self.last_loss,
            best_metric=state.best_metric,
            last_eval=dict(state.last_eval),
            steps_per_s=(step - start_step) / total if total > 0 else 0.0,
            data_wait_share=self.total_wait / total if total > 0 else 0.0,
            resumed_from=start_step if start_step else None,
        )
