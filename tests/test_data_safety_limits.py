"""Issue 11, item 12: what a build or a run would silently ignore or accept is refused up front.

`--set extends=...` (applied after the extends: chain is read) is refused; two specs with one
`name` in one `sigmae-gen build` call (they would overwrite each other's folder) are refused
before anything is written; non-finite numbers where a finite one is required (a spec value,
a learning rate on the emitted script's command line) are errors; and a step's fold settings
(`--probe.eval_folds 9`) are checked against the data set before the first step runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from components.runtime import run_pipeline
from generator.cli import main
from test_runtime_helpers import ALL_STEPS, Config, PretrainConfig, ProbeConfig, make_pipeline, run_main

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"
PRETRAIN = tuple(step for step in ALL_STEPS if step.section == "pretrain")
PRETRAIN_AND_PROBE = tuple(step for step in ALL_STEPS if step.section in ("pretrain", "probe"))


@dataclass
class PretrainWithFolds(PretrainConfig):
    train_folds: list[int] | None = None


@dataclass
class ProbeWithFolds(ProbeConfig):
    train_folds: list[int] | None = None
    lr: float = 0.1


@dataclass
class FoldsConfig(Config):
    """The tests' Config with the recipes' fold and lr settings a spec may set."""

    pretrain: PretrainWithFolds = field(default_factory=PretrainWithFolds)
    probe: ProbeWithFolds = field(default_factory=ProbeWithFolds)


def run_folds(argv: list[str], steps=PRETRAIN_AND_PROBE) -> int:
    torch.set_num_threads(1)
    return run_pipeline(make_pipeline(steps), FoldsConfig, argv)


def gen(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--catalog", str(CATALOG), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def toy_text(name: str = "toy") -> str:
    text = TOY.read_text().replace("data/toy", str(HERE / "fixture_specs" / "data" / "toy"))
    return text.replace("name: toy", f"name: {name}")


# --------------------------------------------------------------------------- --set extends
@pytest.mark.parametrize("override", ["extends=base.yaml", "extends=", "extends.x=1"])
def test_set_extends_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str) -> None:
    (tmp_path / "base.yaml").write_text(toy_text())
    spec = tmp_path / "spec.yaml"
    spec.write_text(toy_text())
    code, output = gen(capsys, "check", str(spec), "--set", override)
    assert code == 2, output
    assert "extends" in output and "--set" in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1


# --------------------------------------------------------------------------- one name, two specs
def test_two_specs_with_one_name_in_one_build_are_refused_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(toy_text())
    second.write_text(toy_text().replace("width: 3", "width: 4"))
    out = tmp_path / "out"
    code, output = gen(capsys, "build", str(first), str(second), "-o", str(out))
    assert code == 2, output
    assert str(first) in output and str(second) in output and "'toy'" in output and "Traceback" not in output
    assert not (out / "toy").exists()  # neither was built: the second would have replaced the first


def test_specs_with_their_own_names_build_in_one_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(toy_text())
    second.write_text(toy_text("toy_two"))
    code, output = gen(capsys, "build", str(first), str(second), "-o", str(tmp_path / "out"))
    assert code == 0, output
    assert (tmp_path / "out" / "toy" / "toy.py").is_file() and (tmp_path / "out" / "toy_two" / "toy_two.py").is_file()


def test_a_set_override_of_the_name_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(toy_text("one"))
    second.write_text(toy_text("two"))
    code, output = gen(capsys, "build", str(first), str(second), "-o", str(tmp_path / "out"), "--set", "name=same")
    assert code == 2 and "'same'" in output and str(first) in output and str(second) in output


# --------------------------------------------------------------------------- non-finite spec values
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "'nan'", "[1.0, .inf]"])
def test_non_finite_spec_numbers_are_refused_where_the_default_is_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(toy_text())
    key = "recipe.pretrain.with.schedule" if value.startswith("[") else "recipe.pretrain.with.lr"
    code, output = gen(capsys, "check", str(spec), "--set", f"{key}={value}")
    assert code == 2, output
    assert "finite number" in output and "Traceback" not in output


def test_non_finite_spec_numbers_in_a_file_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(toy_text().replace("scale: 1e-1", "scale: .nan"))
    code, output = gen(capsys, "check", str(spec))
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "scale: .nan" in text)
    assert code == 2 and f"spec.yaml:{line}:" in output and "scale" in output and "finite number" in output


def test_an_infinity_stays_allowed_where_the_default_is_infinite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"  # the fixture model's `limit: float = float("inf")`
    spec.write_text(toy_text())
    assert gen(capsys, "check", str(spec), "--set", "model.with.limit=-.inf")[0] == 0
    code, output = gen(capsys, "check", str(spec), "--set", "model.with.limit=.nan")
    assert code == 2 and "finite number" in output


# --------------------------------------------------------------------------- non-finite flags
@pytest.mark.parametrize("flag", ["--pretrain.base_lr", "--pretrain.lr", "--pretrain.clip_grad"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_learning_settings_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    code = run_main(["--smoke", "--steps", "1", "--out-dir", str(tmp_path), f"{flag}={value}"], PRETRAIN)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{flag} must be a finite number" in err and "Traceback" not in err


def test_non_finite_finetune_and_probe_settings_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    finetune = tuple(step for step in ALL_STEPS if step.section == "finetune")
    assert run_main(["--smoke", "--steps", "1", "--out-dir", str(tmp_path / "a"), "--finetune.lr", "inf"], finetune) == 2
    assert "--finetune.lr must be a finite number" in capsys.readouterr().err
    probe = tuple(step for step in ALL_STEPS if step.section == "probe")
    assert run_folds(["--smoke", "--out-dir", str(tmp_path / "b"), "--probe.lr", "inf"], probe) == 2
    assert "--probe.lr must be a finite number" in capsys.readouterr().err


# --------------------------------------------------------------------------- folds before the first step
@pytest.mark.parametrize("flag", [["--probe.eval_folds", "9"], ["--probe.train_folds", "1", "7"], ["--pretrain.train_folds", "0"]])
def test_a_steps_unknown_folds_stop_the_run_before_the_first_step(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]) -> None:
    out_dir = tmp_path / "run"
    code = run_folds(["--data-dir", str(tmp_path), "--out-dir", str(out_dir), "--steps", "1", *flag])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert f"{flag[0]}: folds" in captured.err and "do not exist" in captured.err and "[1, 2, 3, 4]" in captured.err
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1
    assert not (out_dir / "pretrain").exists()  # nothing trained before the check


def test_known_folds_and_smoke_runs_pass_the_fold_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--out-dir", str(tmp_path / "run"), "--steps", "1", "--probe.eval_folds", "4", "--probe.epochs", "1"]
    assert run_folds(["--data-dir", str(tmp_path), *args]) == 0, capsys.readouterr().err
    # Under --smoke the synthetic data has folds of its own: the recipes fall back, nothing is refused.
    smoke_args = ["--smoke", "--out-dir", str(tmp_path / "smoke"), "--probe.eval_folds", "9", "--probe.epochs", "1"]
    assert run_folds(smoke_args) == 0, capsys.readouterr().err
