"""Issue 11, item 7: hostile spec shapes are one-line spec errors (exit 2), not a RecursionError.

Deep YAML nesting (block and flow), a ~1,200-file `extends:` chain, and `extends:` to a
symbolic link loop each name the file and line and say what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from generator.cli import main

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--catalog", str(CATALOG), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def toy_text() -> str:
    return TOY.read_text().replace("data/toy", str(HERE / "fixture_specs" / "data" / "toy"))


@pytest.mark.parametrize("levels", [101, 600, 5000])
@pytest.mark.parametrize("style", ["block", "flow"])
def test_deep_yaml_nesting_is_a_one_line_spec_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], levels: int, style: str) -> None:
    if style == "flow":
        deep = "[" * levels + "]" * levels
    else:
        deep = "".join(f"\n{'  ' * (i + 1)}k{i}:" for i in range(levels)) + " 1"
    spec = tmp_path / "deep.yaml"
    spec.write_text(toy_text() + f"deep: {deep}\n")
    code, output = run(capsys, "check", str(spec))
    assert code == 2, output[-2000:]
    assert "nested more than 100 levels" in output and f"{spec.name}:" in output and "Traceback" not in output


def test_nesting_at_the_limit_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "ok.yaml"  # 100 levels deep: an unknown top-level key is the only problem
    spec.write_text(toy_text() + "deep: " + "[" * 99 + "]" * 99 + "\n")
    code, output = run(capsys, "check", str(spec))
    assert code == 2 and "nested" not in output and "deep" in output


def test_a_long_extends_chain_is_a_one_line_spec_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "base0.yaml").write_text(toy_text())
    for i in range(1, 1200):
        (tmp_path / f"base{i}.yaml").write_text(f"extends: base{i - 1}.yaml\ndescription: level {i}\n")
    code, output = run(capsys, "check", str(tmp_path / "base1199.yaml"))
    assert code == 2, output[-2000:]
    assert "extends: chain is longer than 32 files" in output and "Traceback" not in output
    assert "base" in output and ".yaml:1:" in output  # names the file and line of the extends:


def test_a_short_extends_chain_still_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "base0.yaml").write_text(toy_text())
    for i in range(1, 31):
        (tmp_path / f"base{i}.yaml").write_text(f"extends: base{i - 1}.yaml\ndescription: level {i}\n")
    code, output = run(capsys, "check", str(tmp_path / "base30.yaml"))
    assert code == 0, output


@pytest.mark.parametrize("loop", ["self", "pair"])
def test_extends_to_a_symlink_loop_is_a_one_line_spec_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], loop: str) -> None:
    spec = tmp_path / "child.yaml"
    spec.write_text("extends: base.yaml\ndescription: child\n")
    if loop == "self":
        os.symlink(tmp_path / "base.yaml", tmp_path / "base.yaml")
    else:
        os.symlink(tmp_path / "other.yaml", tmp_path / "base.yaml")
        os.symlink(tmp_path / "base.yaml", tmp_path / "other.yaml")
    code, output = run(capsys, "check", str(spec))
    assert code == 2, output[-2000:]
    assert "symbolic link loop" in output and f"{spec.name}:1:" in output and "Traceback" not in output
    os.symlink(tmp_path / "main.yaml", tmp_path / "main.yaml")
    code, output = run(capsys, "check", str(tmp_path / "main.yaml"))
    assert code == 2 and "symbolic link loop" in output and "Traceback" not in output
