"""Process-group set-up (components/distributed.py): the collective timeout, and the long wait
for work rank 0 does alone.

``init_process_group`` gets ``SIGMAE_DIST_TIMEOUT`` (default: torch's own per backend); the other
ranks wait for rank 0's lone work (a FiftyOne export, a query) on a key in the group's own store,
up to ``SIGMAE_MAIN_WAIT_TIMEOUT``, so a long export outlasts the collective timeout while a rank that
stops meeting the others at a collective is still a hang after the short one. Checked with two
gloo processes on the CPU (NCCL's timeout is the same ``timeout=`` argument).
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from components import distributed
from components.distributed import (
    DistInfo,
    DistributedSetupError,
    init_distributed,
    shutdown_distributed,
    timeout_from_env,
    wait_for_main,
)
from components.errors import UsageError
from components.runtime import run_pipeline
from test_runtime_helpers import Config, free_port, make_pipeline, spawn_and_join


def record_group_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Stand in for torch's group creation; what each call was given."""
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.append(("init", kwargs)))
    monkeypatch.setattr(dist.distributed_c10d, "_get_default_store", lambda: "the group's store")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(distributed.MainRankWait, "store", None)
    monkeypatch.setattr(distributed.MainRankWait, "timeout", distributed.MainRankWait.timeout)
    return calls


@pytest.mark.parametrize(
    "device, env, collective_s, wait_s",
    [
        ("cpu", {}, 1800, 6 * 3600),  # torch's gloo default; six hours for rank 0's lone work
        ("cuda", {}, 600, 6 * 3600),  # torch's NCCL default
        ("cuda", {"SIGMAE_DIST_TIMEOUT": "3600", "SIGMAE_MAIN_WAIT_TIMEOUT": "86400"}, 3600, 86400),
        ("cpu", {"SIGMAE_DIST_TIMEOUT": " 90.5 ", "SIGMAE_MAIN_WAIT_TIMEOUT": ""}, 90.5, 6 * 3600),
    ],
)
def test_the_timeouts_reach_the_process_group_and_the_wait_group(
    monkeypatch: pytest.MonkeyPatch, device: str, env: dict[str, str], collective_s: float, wait_s: float
) -> None:
    calls = record_group_calls(monkeypatch)
    for name in ("SIGMAE_DIST_TIMEOUT", "SIGMAE_MAIN_WAIT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    init_distributed(DistInfo(rank=1, world_size=2, local_rank=1), torch.device(device))
    assert calls == [
        ("init", {"backend": "nccl" if device == "cuda" else "gloo", "rank": 1, "world_size": 2,
                  "timeout": timedelta(seconds=collective_s)}),
    ]  # no second group: the ranks wait on the store the group rendezvoused on
    assert distributed.MainRankWait.store == "the group's store"
    assert distributed.MainRankWait.timeout == timedelta(seconds=wait_s)


@pytest.mark.parametrize("value", ["ten", "0", "-5", "inf", "nan"])
def test_a_bad_timeout_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    with pytest.raises(DistributedSetupError) as caught:
        timeout_from_env("SIGMAE_DIST_TIMEOUT", 600, {"SIGMAE_DIST_TIMEOUT": value})
    message = str(caught.value)
    assert message.startswith(f"SIGMAE_DIST_TIMEOUT={value!r} is not a positive number of seconds")
    assert "SIGMAE_DIST_TIMEOUT=600" in message and "\n" not in message


def test_the_script_stops_with_exit_2_on_a_bad_timeout_before_joining_a_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    joined = record_group_calls(monkeypatch)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("SIGMAE_MAIN_WAIT_TIMEOUT", "6h")
    code = run_pipeline(make_pipeline(), Config, ["--smoke", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and joined == [], err
    assert err.strip() == (
        "error: SIGMAE_MAIN_WAIT_TIMEOUT='6h' is not a positive number of seconds; set e.g."
        " SIGMAE_MAIN_WAIT_TIMEOUT=21600 or unset it for the default"
    )


def test_one_process_waits_for_nobody() -> None:
    wait_for_main(DistInfo(), "nothing")  # no group, no communication


# ----------------------------------------------------------------- two gloo processes
def _outcome(action) -> str:
    started = time.monotonic()
    try:
        action()
    except UsageError as error:
        return f"usage error after {time.monotonic() - started:.1f} s: {error}"
    except RuntimeError as error:
        return f"timed out after {time.monotonic() - started:.1f} s: {' '.join(str(error).split())[:120]}"
    return "ok"


def _worker(rank: int, world_size: int, ports: tuple[int, int], out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    info = DistInfo(rank=rank, world_size=world_size, local_rank=rank)
    outcomes = {}
    # Collectives time out after 2 s; rank 0 works alone for 4 s, the others wait up to 60 s.
    os.environ.update(MASTER_PORT=str(ports[0]), SIGMAE_DIST_TIMEOUT="2", SIGMAE_MAIN_WAIT_TIMEOUT="60")
    init_distributed(info, torch.device("cpu"))
    if rank == 0:
        time.sleep(4)
    outcomes["long lone work"] = _outcome(lambda: wait_for_main(info, "the export"))
    dist.all_reduce(torch.ones(1))  # then the group works as before
    if rank == 0:
        time.sleep(4)  # a rank missing a collective for longer than 2 s: a hang
    outcomes["hang at a collective"] = _outcome(dist.barrier)
    shutdown_distributed()
    # Rank 0's lone work outlasting SIGMAE_MAIN_WAIT_TIMEOUT: one line naming the variable.
    os.environ.update(MASTER_PORT=str(ports[1]), SIGMAE_DIST_TIMEOUT="60", SIGMAE_MAIN_WAIT_TIMEOUT="2")
    init_distributed(info, torch.device("cpu"))
    if rank == 0:
        time.sleep(5)
    outcomes["lone work too long"] = _outcome(lambda: wait_for_main(info, "the export"))
    shutdown_distributed()
    # Rank 0 failing in its lone work (its process gone): the others say so, not "too long".
    os.environ.update(MASTER_PORT=str(ports[2]), SIGMAE_DIST_TIMEOUT="60", SIGMAE_MAIN_WAIT_TIMEOUT="60")
    init_distributed(info, torch.device("cpu"))
    if rank == 0:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcomes))
        os._exit(0)  # as a crash: no wait, no shutdown
    outcomes["rank 0 failed"] = _outcome(lambda: wait_for_main(info, "the export"))
    shutdown_distributed()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcomes))


@pytest.mark.slow
def test_ranks_wait_for_rank_0s_lone_work_past_the_collective_timeout_and_a_hang_still_times_out(
    tmp_path: Path,
) -> None:
    spawn_and_join(_worker, (2, (free_port(), free_port(), free_port()), str(tmp_path)), nprocs=2, timeout=240)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["long lone work"] for r in ranks] == ["ok", "ok"], ranks
    hang = ranks[1]["hang at a collective"]
    assert hang.startswith("timed out after ") and float(hang.split()[3]) < 4, ranks
    late = ranks[1]["lone work too long"]
    assert late.startswith("usage error after ") and float(late.split()[3]) < 5, ranks
    assert "rank 1: rank 0 did not finish the export within 2 s" in late and "set SIGMAE_MAIN_WAIT_TIMEOUT" in late
    assert "\n" not in late and ranks[0]["lone work too long"] == "ok"  # rank 0 finished; the others had stopped
    failed = ranks[1]["rank 0 failed"]
    assert failed.startswith("usage error after ") and float(failed.split()[3]) < 30, ranks
    assert "rank 1: rank 0 stopped before it finished the export" in failed and "see rank 0's messages" in failed
    assert "SIGMAE_MAIN_WAIT_TIMEOUT" not in failed


def test_without_a_store_to_wait_on_it_warns_and_waits_at_a_plain_barrier(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = record_group_calls(monkeypatch)
    monkeypatch.delattr(dist.distributed_c10d, "_get_default_store")  # a torch that hides it
    monkeypatch.delenv("SIGMAE_DIST_TIMEOUT", raising=False)
    init_distributed(DistInfo(rank=1, world_size=2, local_rank=1), torch.device("cuda"))
    assert [name for name, _ in calls] == ["init"] and distributed.MainRankWait.store is None
    out = capsys.readouterr().out
    assert "rank 1: warning: this torch gives no process-group store to wait on" in out
    assert "must finish within SIGMAE_DIST_TIMEOUT (600 s)" in out
    barriers: list[dict] = []
    monkeypatch.setattr(dist, "barrier", lambda **kwargs: barriers.append(kwargs))
    wait_for_main(DistInfo(rank=1, world_size=2, local_rank=1), "the export")
    assert barriers == [{}]  # the process group's own barrier
