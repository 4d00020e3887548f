"""The training loop waits for the device only at its checks: the log interval, checkpoints,
evaluations and the end (and under DDP at least every few seconds, so a stop is agreed on
promptly), never after every optimizer step. Counted on CPU: every read of a tensor's value
by the host (``item``, ``tolist``, ``float``/``int``/``bool``), and every ``all_reduce`` of a
two-process gloo run, each recorded with the step it happens in."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from components.distributed import DistInfo, dist_info_from_env, init_distributed, shutdown_distributed
from components import loop_support
from components.recipes import engine
from components.loop_support import LoopSettings
from components.recipes.engine import WarmupCosineSchedule
from components.runtime import NonFiniteLossError, StopRequested
from test_runtime_helpers import LinearRegressor, LoopRun, RegressionObjective, ToneDataset, free_port, make_stage, spawn_and_join

HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__")


LOOPS = ("pretrain_loop", "classifier_loop")


@pytest.fixture(params=LOOPS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each recipe writes its own loop: every check here runs on both."""
    return request.param


def _loop(
    out_dir: Path, dist_info: DistInfo | None = None, nan_from: int | None = None, kind: str = "pretrain_loop", **settings
) -> LoopRun:
    """20 SGD steps in one epoch (log every 5, one checkpoint at the end), through the recipe loop ``kind``
    (``classifier_loop`` also evaluates at the epoch end)."""
    stage = make_stage(out_dir, dist_info=dist_info)
    torch.manual_seed(0)
    model = LinearRegressor()
    options = {"epochs": 1, "batch_size": 1, "checkpoint_every": 1000, "log_every": 5, **settings}
    return LoopRun(
        stage, model=model, objective=RegressionObjective(model, nan_from=nan_from),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01), dataset=ToneDataset(num_items=20 * (dist_info or DistInfo()).world_size),
        settings=LoopSettings(**options), lr_at=WarmupCosineSchedule(0.01),
        evaluate=(lambda epoch: {"accuracy": 0.5}) if kind == "classifier_loop" else None,
    )


class StepRecorder:
    """Counts calls by step: ``step`` is the number of optimizer steps taken so far, so the
    checks, logs and checkpoints after step ``s`` count as ``s``."""

    def __init__(self, loop: LoopRun) -> None:
        self.step, self.calls = 0, {}
        take_step = loop.optimizer.step

        def counted_step(*args, **kwargs):
            self.step += 1
            return take_step(*args, **kwargs)

        loop.optimizer.step = counted_step

    def count(self, name: str) -> None:
        self.calls.setdefault(self.step, []).append(name)


def _host_reads_by_step(loop: LoopRun, monkeypatch: pytest.MonkeyPatch) -> dict[int, list[str]]:
    """Reads of tensor values by step, but for the data loader's own (host tensors before ``.to(device)``),
    as on an accelerator (on the CPU, where reads are free, the loop also reads each step's loss)."""
    recorder = StepRecorder(loop)
    monkeypatch.setattr(engine, "host_reads_are_free", lambda device: False)
    with monkeypatch.context() as patch:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(*args, _name=name, _original=original, **kwargs):
                caller = sys._getframe(1).f_code
                if caller.co_name != "collate_signals" and not caller.co_filename.endswith("test_runtime_helpers.py"):
                    recorder.count(_name)
                return _original(*args, **kwargs)

            patch.setattr(torch.Tensor, name, counted)
        loop.run()
    return recorder.calls


def test_a_single_process_reads_the_device_once_per_log_interval(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _host_reads_by_step(_loop(tmp_path, kind=kind), monkeypatch)
    # the first step, every 5th (log interval) and the last; nothing in the steps between
    assert sorted(step for step in reads if 1 <= step <= 20) == [1, 5, 10, 15, 20], reads
    assert len(reads[10]) == len(reads[15])  # a fixed number of reads per check, however many steps it covers


def test_every_step_is_checked_when_the_log_interval_is_one(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _host_reads_by_step(_loop(tmp_path, kind=kind, log_every=1), monkeypatch)
    assert sorted(step for step in reads if 1 <= step <= 20) == list(range(1, 21))


def test_checkpoints_are_checked_steps(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _host_reads_by_step(_loop(tmp_path, kind=kind, log_every=1000, checkpoint_every=7), monkeypatch)
    assert sorted(step for step in reads if 1 <= step <= 20) == [1, 7, 14, 20]


@pytest.mark.parametrize("reads_are_free", [True, False], ids=["cpu", "accelerator"])
def test_a_non_finite_step_between_checks_is_named_and_never_reaches_a_checkpoint(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads_are_free: bool
) -> None:
    monkeypatch.setattr(engine, "host_reads_are_free", lambda device: reads_are_free)
    loop = _loop(tmp_path, nan_from=8, kind=kind, checkpoint_every=6)  # checks at 1, 5, 6, 10: the NaN is step 8
    with pytest.raises(NonFiniteLossError, match=r"the loss became nan at step 8 \(found at the check of steps 7-10\)"):
        loop.run()
    assert torch.load(loop.checkpointer.last_path, weights_only=True)["step"] == 6
    assert all(torch.isfinite(p).all() for p in loop.model.parameters())  # the step was skipped or its gradients dropped


class NaNGradients(RegressionObjective):
    """A finite loss whose gradients are NaN from call ``from_call`` on (as a square root at 0 gives)."""

    def __init__(self, model: torch.nn.Module, from_call: int) -> None:
        super().__init__(model)
        self.from_call = from_call

    def forward(self, features, labels):
        loss, logs = super().forward(features, labels)
        if self.calls >= self.from_call:
            loss = loss + 0.0 * torch.sqrt((self.model.linear.weight - self.model.linear.weight.detach()).abs()).sum()
        return loss, logs


@pytest.mark.parametrize("reads_are_free", [True, False], ids=["cpu", "accelerator"])
def test_finite_loss_with_non_finite_gradients_is_never_applied_nor_saved(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads_are_free: bool
) -> None:
    monkeypatch.setattr(engine, "host_reads_are_free", lambda device: reads_are_free)
    loop = _loop(tmp_path, kind=kind, checkpoint_every=6)  # checks at 1, 5, 6, 10: the bad step is 8
    loop.objective = NaNGradients(loop.model, from_call=8)
    with pytest.raises(NonFiniteLossError, match=r"the gradients became non-finite at step 8 \(found at the check of steps 7-10\) \(its loss: "):
        loop.run()
    assert torch.load(loop.checkpointer.last_path, weights_only=True)["step"] == 6
    assert all(torch.isfinite(p).all() for p in loop.model.parameters())


def test_a_stop_request_is_acted_on_at_the_next_step_in_a_single_process(kind: str, tmp_path: Path) -> None:
    loop = _loop(tmp_path, kind=kind)
    loop.on_step = lambda step: loop.stage.stop.request("SIGTERM") if step == 7 else None
    with pytest.raises(StopRequested, match="at step 8; checkpoint saved"):
        loop.run()
    assert torch.load(loop.checkpointer.last_path, weights_only=True)["step"] == 8


# ----------------------------------------------------------------------------- two processes (gloo)
def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = dist_info_from_env()
    init_distributed(info, torch.device("cpu"))
    reports: dict[str, dict[str, object]] = {}
    try:
        for kind in LOOPS:
            reports[kind] = report = {}
            for case, seconds in (("steady", loop_support.STOP_CHECK_SECONDS), ("slow", 0.0)):
                loop_support.STOP_CHECK_SECONDS = seconds  # 0: every step is "slower" than the stop bound
                loop = _loop(Path(out_dir) / kind / case, info, kind=kind)
                recorder = StepRecorder(loop)
                original = dist.all_reduce
                dist.all_reduce = lambda *a, **k: (recorder.count("all_reduce"), original(*a, **k))[1]
                try:
                    loop.run()
                finally:
                    dist.all_reduce = original
                report[case] = sorted(step for step in recorder.calls if 1 <= step <= 20)
            loop_support.STOP_CHECK_SECONDS = 5.0
            # a stop signalled to rank 1 alone, after step 7: both ranks stop at the next check
            loop = _loop(Path(out_dir) / kind / "stop", info, kind=kind)
            loop.on_step = lambda step: loop.stage.stop.request("SIGTERM") if step == 7 and rank == 1 else None
            try:
                loop.run()
            except StopRequested as stopped:
                report["stop"] = str(stopped)
            # a NaN on rank 1 alone, at step 3 (its 4th call: DDP's unused-parameter probe is the 1st): both ranks stop at the check of step 5 and name it
            loop = _loop(Path(out_dir) / kind / "nan", info, nan_from=4 if rank == 1 else None, kind=kind)
            try:
                loop.run()
            except NonFiniteLossError as error:
                report["nan"] = str(error)
            # rank 0's loss stayed finite, but rank 1's NaN reached its gradients in the all-reduce
            report["weights_finite"] = all(bool(torch.isfinite(p).all()) for p in loop.model.parameters())
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(reports))
        dist.barrier()  # neither rank tears the group down while the other still uses it
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_ddp_ranks_all_reduce_once_per_check_and_agree_on_stops(tmp_path: Path) -> None:
    spawn_and_join(_ddp_worker, (2, free_port(), str(tmp_path)), nprocs=2, timeout=240)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text())[kind] for r in range(2) for kind in LOOPS]
    for report in reports:
        assert report["steady"] == [1, 5, 10, 15, 20]
        assert report["slow"] == list(range(1, 21))
        assert "stopped by" in report["stop"] and "at step 10; checkpoint saved" in report["stop"]
        assert "the loss became nan at step 3 (found at the check of steps 2-5) on rank 1" in report["nan"]
        assert report["weights_finite"]  # neither rank applied the NaN gradients
