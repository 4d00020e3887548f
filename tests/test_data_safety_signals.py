"""Issue 11, item 2: SIGTERM to the whole process group while DataLoader workers run.

SLURM, systemd, Kubernetes and `timeout` signal every process of the job, so the loader's
workers get the SIGTERM too. The run must still stop as it does for a SIGTERM to the main
process alone: a checkpoint at the step where it stopped, exit 0, "resume with --resume",
and no worker left behind. Each run is a real process in its own session (`os.killpg`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent

DRIVER = f"""
import os, sys, time
sys.path.insert(0, {str(HERE)!r})
import torch
from test_runtime_helpers import Config, NeedsRootDataset, make_pipeline, ALL_STEPS
from components.runtime import run_pipeline


class SlowTones(NeedsRootDataset):
    def load(self, index):
        time.sleep(0.02)  # the workers are busy loading when the signal lands
        return super().load(index)


torch.set_num_threads(1)
steps = tuple(step for step in ALL_STEPS if step.section == "pretrain")
raise SystemExit(run_pipeline(make_pipeline(steps, data=SlowTones), Config, sys.argv[1:]))
"""


def _train_lines(out_dir: Path) -> int:
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum('"kind": "train"' in line for line in path.read_text().splitlines())


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(("signum", "workers"), [(signal.SIGTERM, 2), (signal.SIGTERM, 4), (signal.SIGINT, 2)])
def test_a_stop_signal_to_the_process_group_saves_a_checkpoint_and_exits_0(tmp_path: Path, signum: int, workers: int) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    out_dir = tmp_path / "run"
    log_path = tmp_path / "run.log"
    command = [
        sys.executable, str(driver), "--data-dir", str(data_dir), "--out-dir", str(out_dir), "--device", "cpu",
        "--pretrain.epochs", "200", "--pretrain.num_workers", str(workers), "--pretrain.checkpoint_every", "1000",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _train_lines(out_dir) < 3 and process.poll() is None:
            assert time.monotonic() < deadline, "the run did not reach 3 steps"
            time.sleep(0.01)
        assert process.poll() is None, log_path.read_text()[-3000:]
        os.killpg(process.pid, signum)  # what a scheduler (SIGTERM) or Ctrl-C (SIGINT) sends: every process
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert f"stopped by {signal.Signals(signum).name}" in log and "resume with --resume" in log, log[-3000:]
    assert "Traceback" not in log and "killed by signal" not in log, log[-3000:]
    step = torch.load(out_dir / "pretrain" / "last.pt", map_location="cpu", weights_only=True)["step"]
    assert step >= 3
    deadline = time.monotonic() + 10
    while _group_alive(process.pid):  # the workers are gone too, none orphaned
        assert time.monotonic() < deadline, "DataLoader workers outlived the run"
        time.sleep(0.05)
