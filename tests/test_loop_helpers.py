"""The pieces the recipes' loops are made of, one by one: when a loop checks, logs and saves
(``CheckSchedule``), what a checkpoint holds and gives back (``checkpoint_payload`` and
``restore_training``), and which evaluation counts as the best (``record_evaluation``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.distributed import DistInfo
from components.loop_support import (
    CheckSchedule,
    LoopPlan,
    LoopSettings,
    Trainables,
    TrainState,
    checkpoint_payload,
    restore_training,
)
from components.recipes.finetune import record_evaluation
from test_runtime_helpers import LinearRegressor, make_stage


def _steps(predicate, run_until: int) -> list[int]:
    return [step for step in range(1, run_until + 1) if predicate(step)]


def test_the_check_schedule_syncs_logs_and_saves_at_the_steps_it_promises() -> None:
    settings = LoopSettings(epochs=2, batch_size=1, log_every=4, checkpoint_every=5)
    plan = LoopPlan.make(7, settings, world_size=1, max_steps=None)  # 7 steps an epoch, 14 in all
    checks = CheckSchedule(settings, plan, start_step=2, distributed=False)  # resumed after step 2
    epoch_end = lambda step: (step - 1) // 7 * 7 + 7  # noqa: E731
    assert _steps(checks.log_due, 14) == [3, 4, 8, 12, 14]  # first step, every 4th, the end
    assert _steps(lambda s: checks.checkpoint_due(s, epoch_end(s)), 14) == [5, 7, 10, 14]
    checks.adapt(step_seconds=100.0)  # a single process syncs at the log interval, however slow
    assert checks.every == 4
    synced = _steps(lambda s: checks.sync_due(s, epoch_end(s), unsynced=0, stop_requested=False), 14)
    assert synced == [3, 4, 5, 7, 8, 10, 12, 14]
    assert checks.sync_due(6, 7, unsynced=0, stop_requested=True)  # its own stop flag: at once

    ddp = CheckSchedule(settings, plan, start_step=0, distributed=True)
    assert not ddp.sync_due(6, 7, unsynced=0, stop_requested=True)  # the ranks agree at a sync only
    ddp.adapt(step_seconds=2.0)  # 5 s / 2 s: every 2 steps
    assert ddp.every == 2 and not ddp.sync_due(6, 7, unsynced=1, stop_requested=False)
    assert ddp.sync_due(6, 7, unsynced=2, stop_requested=False)
    ddp.adapt(step_seconds=0.01)  # fast steps: the log interval
    assert ddp.every == 4


def _parts(seed: int) -> Trainables:
    torch.manual_seed(seed)
    model = LinearRegressor()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 64)).sum().backward()
    optimizer.step()  # moments to restore
    return Trainables(model, optimizer, torch.amp.GradScaler("cpu", enabled=False))


def test_a_checkpoint_payload_restores_step_state_weights_and_rng(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage = make_stage(tmp_path)
    plan = LoopPlan.make(40, LoopSettings(epochs=2, batch_size=4), world_size=1, max_steps=None)
    saved = _parts(0)
    state = TrainState(best_metric=0.75, last_eval={"accuracy": 0.75}, evaluated_at=10, pending_eval=True)
    checkpointer = stage.checkpointer()
    torch.manual_seed(123)
    checkpointer.save(checkpoint_payload(stage, plan, 13, state, saved), step=13)
    draw = torch.rand(3)  # what the stream gives after the save

    resumed = make_stage(tmp_path, ["--resume"])
    restored = _parts(1)  # other weights and moments
    torch.manual_seed(999)
    step, got = restore_training(resumed, resumed.checkpointer(), plan, restored)
    assert step == 13 and got == state
    assert torch.equal(restored.model.linear.weight, saved.model.linear.weight)
    assert torch.equal(
        restored.optimizer.state_dict()["state"][0]["exp_avg"], saved.optimizer.state_dict()["state"][0]["exp_avg"]
    )
    assert torch.equal(torch.rand(3), draw)  # the random stream continues where it was saved
    assert f"resumed from {tmp_path / 'toy' / 'last.pt'} at step 13" in capsys.readouterr().out

    fresh = make_stage(tmp_path / "fresh")
    assert restore_training(fresh, fresh.checkpointer(), plan, _parts(2)) == (0, TrainState())


def test_a_checkpoint_from_another_world_size_restarts_the_random_streams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage = make_stage(tmp_path)
    plan = LoopPlan.make(40, LoopSettings(epochs=1, batch_size=4), world_size=1, max_steps=None)
    stage.checkpointer().save(checkpoint_payload(stage, plan, 5, TrainState(), _parts(0)), step=5)
    two = make_stage(tmp_path, ["--resume"], dist_info=DistInfo(rank=0, world_size=2))
    step, _ = restore_training(two, two.checkpointer(), plan, _parts(1))
    assert step == 5 and "world size changed (1 -> 2): random streams restart" in capsys.readouterr().out


def test_the_best_evaluation_is_the_first_with_the_highest_accuracy(tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    state = TrainState()
    found = [
        record_evaluation(stage, state, {"accuracy": accuracy, "loss": 1.0}, step, step - 1, "toy")
        for step, accuracy in enumerate([0.5, 0.7, 0.7, float("nan"), 0.6, 0.8], start=1)
    ]
    assert found == [True, True, False, False, False, True]  # a tie keeps the first, NaN is never best
    assert state.best_metric == 0.8 and state.evaluated_at == 6 and state.last_eval == {"accuracy": 0.8, "loss": 1.0}
    assert not record_evaluation(stage, TrainState(), {"loss": 0.1}, 1, 0, "toy")  # no accuracy: no best
    first_nan = TrainState()
    assert not record_evaluation(stage, first_nan, {"accuracy": float("nan")}, 1, 0, "toy")
    assert record_evaluation(stage, first_nan, {"accuracy": 0.5}, 2, 1, "toy") and first_nan.best_metric == 0.5
