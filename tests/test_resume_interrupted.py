"""A step stopped part-way is continued by --resume only when nothing it depends on changed:
not after an earlier step ran again, not with other settings of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.recipes.finetune import finetune
from components.runtime import Step
from test_runtime_helpers import ALL_STEPS, run_main

PRETRAIN, FINETUNE = ALL_STEPS[0], ALL_STEPS[1]


def finetune_stopped_after_one_step(stage, /, **settings):
    """Fine-tuning as a SIGTERM would leave it: stopped after its first step, checkpoint saved."""
    stage.stop.request("SIGTERM")
    return finetune(stage, **settings)


def stop_finetune_part_way(args: list[str], out: Path) -> None:
    assert run_main(args, (PRETRAIN, Step("finetune", finetune_stopped_after_one_step))) == 0
    record = json.loads((out / "pipeline_state.json").read_text())["completed"]
    assert "summary" in record["pretrain"] and "summary" not in record.get("finetune", {})
    assert (out / "finetune" / "last.pt").is_file()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--pretrain.lr", "7e-4"], "an earlier step ran again since this one started"),
        (["--finetune.lr", "7e-4"], "its settings changed since it started (finetune.lr"),
    ],
)
def test_a_step_stopped_part_way_runs_afresh_when_it_or_a_step_before_it_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: list[str], expected: str
) -> None:
    args = ["--smoke", "--out-dir", str(tmp_path)]
    stop_finetune_part_way(args, tmp_path)
    capsys.readouterr()
    assert run_main([*args, "--resume", *change], (PRETRAIN, FINETUNE)) == 0
    out = capsys.readouterr().out
    assert expected in out, out
    assert "[finetune] resumed from" not in out  # not continued from the old checkpoint
    assert (tmp_path / "finetune.old-1" / "last.pt").is_file()  # moved aside, not deleted


def test_a_step_stopped_part_way_continues_when_nothing_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--smoke", "--out-dir", str(tmp_path)]
    stop_finetune_part_way(args, tmp_path)
    capsys.readouterr()
    assert run_main([*args, "--resume"], (PRETRAIN, FINETUNE)) == 0
    out = capsys.readouterr().out
    assert "[pretrain] already completed; skipped" in out and "[finetune] resumed from" in out, out
    assert not (tmp_path / "finetune.old-1").exists()
