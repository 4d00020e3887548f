"""Exact resume: a run killed (SIGKILL) at a random step, or stopped by SIGTERM, and resumed with
``--resume`` ends with bit-for-bit the weights of an uninterrupted run (CPU, --deterministic).

Each run is a real process running the runtime through ``tests/test_runtime_helpers.py`` with
two stages (MAE pre-training, then fine-tuning), so a kill can land in either stage, inside a
step, or while a checkpoint is being written. Loading is slowed a little so there is a window.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HELPER = Path(__file__).with_name("test_runtime_helpers.py")
STAGES = "pretrain,finetune"
TOTAL_TRAIN_LINES = 16 + 6  # pretrain: 2 epochs x 8 steps; finetune: 2 epochs x 3 steps (log_every 1)


def _start(out_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TONES_DELAY_S": "0.003", "OMP_NUM_THREADS": "1"}
    log = open(out_dir.with_suffix(".log"), "ab")
    command = [sys.executable, str(HELPER), STAGES, "--smoke", "--deterministic", "--steps", "100", "--out-dir", str(out_dir), *extra]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _train_lines(out_dir: Path) -> int:
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum('"kind": "train"' in line for line in path.read_text().splitlines())


def _wait_for_lines(process: subprocess.Popen, out_dir: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _train_lines(out_dir) < count and process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"run in {out_dir} did not reach {count} steps")
        time.sleep(0.002)


def _finish(process: subprocess.Popen, out_dir: Path) -> int:
    code = process.wait(timeout=120)
    assert code == 0, out_dir.with_suffix(".log").read_text()[-3000:]
    return code


def _final_weights(out_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        stage: torch.load(out_dir / stage / "last.pt", map_location="cpu", weights_only=True)["model"]
        for stage in STAGES.split(",")
    }


def _assert_same_weights(expected: dict[str, dict[str, torch.Tensor]], actual: dict[str, dict[str, torch.Tensor]], note: str) -> None:
    for stage, weights in expected.items():
        assert weights.keys() == actual[stage].keys()
        different = [name for name, value in weights.items() if not torch.equal(value, actual[stage][name])]
        assert not different, f"{note}: {stage} weights differ in {different[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    out_dir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    _finish(_start(out_dir), out_dir)
    assert _train_lines(out_dir) == TOTAL_TRAIN_LINES
    return _final_weights(out_dir)


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_matches_uninterrupted(uninterrupted: dict, tmp_path: Path) -> None:
    rng = random.Random(20261125)
    for trial in range(2):
        out_dir = tmp_path / f"trial{trial}"
        target = rng.randint(1, TOTAL_TRAIN_LINES - 1)
        process = _start(out_dir)
        _wait_for_lines(process, out_dir, target)
        time.sleep(rng.uniform(0.0, 0.02))  # land anywhere inside the next step or checkpoint write
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        _finish(_start(out_dir, "--resume"), out_dir)
        _assert_same_weights(uninterrupted, _final_weights(out_dir), f"trial {trial} killed after {target} steps")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_0_and_resumes_exactly(uninterrupted: dict, tmp_path: Path) -> None:
    out_dir = tmp_path / "term"
    process = _start(out_dir)
    _wait_for_lines(process, out_dir, 5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    log = out_dir.with_suffix(".log").read_text()
    assert "stopped by SIGTERM" in log and "resume with --resume" in log
    stopped_at = torch.load(out_dir / "pretrain" / "last.pt", weights_only=True)["step"]
    assert 5 <= stopped_at < 16  # a checkpoint at the step where it stopped, not only the periodic ones
    _finish(_start(out_dir, "--resume"), out_dir)
    assert f"resumed from {out_dir / 'pretrain' / 'last.pt'} at step {stopped_at}" in out_dir.with_suffix(".log").read_text()
    _assert_same_weights(uninterrupted, _final_weights(out_dir), "SIGTERM")
