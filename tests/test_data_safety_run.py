"""Issue 11, item 6: what a user gets wrong on the emitted script's command line is one line
naming the problem and the fix, exit 2, never a traceback.

Each case runs the runtime in-process through the tests' tone pipeline (`--smoke`, a few steps).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_runtime_helpers import ALL_STEPS, run_main

PRETRAIN = tuple(step for step in ALL_STEPS if step.section == "pretrain")


def smoke(capsys: pytest.CaptureFixture[str], out_dir: Path, *extra: str) -> tuple[int, str]:
    code = run_main(["--smoke", "--steps", "2", "--out-dir", str(out_dir), *extra], PRETRAIN)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("where", ["itself", "parent", "grandparent"])
def test_an_out_dir_that_is_or_lies_under_a_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    out_dir = {"itself": blocker, "parent": blocker / "run", "grandparent": blocker / "a" / "run"}[where]
    code, output = smoke(capsys, out_dir)
    assert code == 2, output
    assert "--out-dir" in output and "a file, not a folder" in output and str(blocker) in output
    assert "Traceback" not in output and blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize("seed", [2**63, 2**63 - 1, 2**70, 2**50, -5])
def test_any_integer_seed_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    code, output = smoke(capsys, tmp_path / "run", "--seed", str(seed))
    assert code == 0, output


def test_last_pt_without_its_optimizer_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "run"
    assert smoke(capsys, out_dir)[0] == 0
    last = out_dir / "pretrain" / "last.pt"
    payload = torch.load(last, weights_only=True)
    del payload["optimizer"]
    last.unlink()  # a hard link to the step file: replace it, not the file behind it
    torch.save(payload, last)
    code, output = smoke(capsys, out_dir, "--resume", "--steps", "3")
    assert code == 2, output
    assert str(last) in output and "'optimizer'" in output and "--resume" in output and "Traceback" not in output


@pytest.mark.parametrize("resume", [False, True])
def test_last_pt_that_is_a_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], resume: bool) -> None:
    out_dir = tmp_path / "run"
    (out_dir / "pretrain" / "last.pt").mkdir(parents=True)
    (out_dir / "pretrain" / "last.pt" / "mine.txt").write_text("x")
    code, output = smoke(capsys, out_dir, *(["--resume"] if resume else []))
    assert code == 2, output
    assert str(out_dir / "pretrain" / "last.pt") in output and "is a folder" in output and "Traceback" not in output
    assert (out_dir / "pretrain" / "last.pt" / "mine.txt").read_text() == "x"


def test_resume_with_nothing_to_resume_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 11, item 11 (first part): `--resume` on an empty folder is a new run, and says so."""
    out_dir = tmp_path / "run"
    code, output = smoke(capsys, out_dir, "--resume")
    assert code == 0, output
    assert "nothing to resume" in output and "starting a new run" in output and ", resuming" not in output
    code, output = smoke(capsys, out_dir, "--resume", "--steps", "3")
    assert code == 0 and ", resuming" in output and "nothing to resume" not in output
