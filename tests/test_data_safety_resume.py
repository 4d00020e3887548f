"""Issue 11, item 11 (rest): `--resume` never keeps a result whose settings changed.

A completed step whose own settings changed since it finished runs again, its earlier outputs
moved aside to `<out>/<step>.old-<n>` (never deleted); settings that cannot change a result
(`num_workers`, `log_every`, ...) do not count. A changed data, transform or model setting
(or `--data-dir`) stops the run with exit 2, naming each field with its old and new value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_runtime_helpers import ALL_STEPS, run_main

STEPS = tuple(step for step in ALL_STEPS if step.section in ("pretrain", "probe"))


def summary(out_dir: Path) -> dict:
    return json.loads((out_dir / "summary.json").read_text())["steps"]


def test_a_changed_step_setting_reruns_that_step_and_moves_its_outputs_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--smoke", "--out-dir", str(tmp_path), "--probe.epochs", "3"]
    assert run_main(args, STEPS) == 0
    (tmp_path / "probe" / "mine.txt").write_text("keep me\n")
    first = (tmp_path / "probe" / "summary.json").read_text()
    capsys.readouterr()
    assert run_main([*args[:-1], "5", "--resume"], STEPS) == 0
    out = capsys.readouterr().out
    assert "[pretrain] already completed; skipped" in out and "[probe] already completed" not in out
    assert "probe.epochs: 3 -> 5" in out and str(tmp_path / "probe.old-1") in out
    assert (tmp_path / "probe.old-1" / "mine.txt").read_text() == "keep me\n"
    assert (tmp_path / "probe.old-1" / "summary.json").read_text() == first
    assert summary(tmp_path)["probe"]["steps"] == 5  # the probe ran with its new setting
    # Nothing changed since: nothing runs again.
    assert run_main([*args[:-1], "5", "--resume"], STEPS) == 0
    assert capsys.readouterr().out.count("already completed; skipped") == 2
    assert not (tmp_path / "probe.old-2").exists()


def test_a_changed_earlier_step_moves_aside_every_step_that_runs_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--smoke", "--out-dir", str(tmp_path), "--probe.epochs", "2"]
    assert run_main(args, STEPS) == 0
    capsys.readouterr()
    assert run_main([*args, "--resume", "--pretrain.lr", "0.002"], STEPS) == 0
    out = capsys.readouterr().out
    assert "pretrain.lr: 0.001 -> 0.002" in out and "[probe] an earlier step ran again" in out
    assert (tmp_path / "pretrain.old-1" / "last.pt").is_file() and (tmp_path / "probe.old-1" / "summary.json").is_file()
    assert (tmp_path / "pretrain" / "last.pt").is_file() and (tmp_path / "probe" / "summary.json").is_file()


def test_settings_that_cannot_change_a_result_do_not_rerun_a_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--smoke", "--out-dir", str(tmp_path), "--probe.epochs", "2"]
    assert run_main(args, STEPS) == 0
    capsys.readouterr()
    assert run_main([*args, "--resume", "--pretrain.log_every", "5", "--probe.num_workers", "1"], STEPS) == 0
    assert capsys.readouterr().out.count("already completed; skipped") == 2


def test_a_changed_model_setting_names_old_and_new_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pretrain = STEPS[:1]
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--steps", "1"], pretrain) == 0
    capsys.readouterr()
    code = run_main(["--smoke", "--out-dir", str(tmp_path), "--resume", "--model.embed_dim", "64", "--model.depth", "2"], pretrain)
    err = capsys.readouterr().err
    assert code == 2 and "model.depth: 1 -> 2" in err and "model.embed_dim: 32 -> 64" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "{" not in err


def test_a_changed_data_dir_stops_a_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    pretrain = STEPS[:1]
    out = ["--out-dir", str(tmp_path / "run"), "--steps", "1"]
    assert run_main(["--data-dir", str(first), *out], pretrain) == 0
    capsys.readouterr()
    code = run_main(["--data-dir", str(second), *out, "--resume"], pretrain)
    err = capsys.readouterr().err
    assert code == 2 and f"data.root: {str(first)!r} -> {str(second)!r}" in err and "Traceback" not in err
    assert run_main(["--data-dir", str(first), *out, "--resume"], pretrain) == 0  # the same folder resumes


def test_smoke_against_a_real_run_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pretrain = STEPS[:1]
    assert run_main(["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"), "--steps", "1"], pretrain) == 0
    capsys.readouterr()
    code = run_main(["--smoke", "--out-dir", str(tmp_path / "run"), "--resume"], pretrain)
    err = capsys.readouterr().err
    assert code == 2 and "--smoke: off -> on" in err


def test_a_later_step_is_out_of_date_once_an_earlier_one_ran_again_in_another_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The notebook runs one step per cell (pipelines of the first n steps, each with --resume):
    a pre-training run again with a new setting makes the probe's old result out of date, even
    though the call that re-ran it did not include the probe."""
    args = ["--smoke", "--out-dir", str(tmp_path), "--probe.epochs", "2"]
    assert run_main(args, STEPS) == 0
    capsys.readouterr()
    assert run_main([*args, "--resume", "--pretrain.lr", "0.002"], STEPS[:1]) == 0
    assert "pretrain.lr: 0.001 -> 0.002" in capsys.readouterr().out
    assert run_main([*args, "--resume", "--pretrain.lr", "0.002"], STEPS) == 0
    out = capsys.readouterr().out
    assert "[pretrain] already completed; skipped" in out and "[probe] an earlier step ran again" in out
    assert (tmp_path / "probe.old-1").is_dir()
