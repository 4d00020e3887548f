"""Issue 11, item 8: a step name that is also a name of the emitted module is refused.

A step becomes a field of the emitted `Config` dataclass; named `field` (or the runtime's
`RunOptions`, or another section's config class) it shadows that name in the class body and
the script dies at import. The build says so at the step's spec line, exit 2, and writes
nothing. A step named like a module-level function (`evaluate`) shadows nothing used: it builds.
"""

from __future__ import annotations

import subprocess
import sys
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


def toy_with_step(tmp_path: Path, step: str) -> Path:
    text = TOY.read_text().replace("data/toy", str(HERE / "fixture_specs" / "data" / "toy"))
    assert "name: pretrain" in text
    spec = tmp_path / "named.yaml"
    spec.write_text(text.replace("name: pretrain", f"name: {step}").replace("  pretrain: {epochs: 1}", f"  {step}: {{epochs: 1}}"))
    return spec


@pytest.mark.parametrize("step", ["field", "RunOptions", "EvaluateConfig"])
def test_a_step_named_like_a_module_name_is_a_spec_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], step: str) -> None:
    spec = toy_with_step(tmp_path, step)
    out = tmp_path / "out"
    code, output = run(capsys, "build", str(spec), "-o", str(out))
    assert code == 2, output
    assert f"step name {step!r}" in output and "named.yaml:" in output and "Traceback" not in output
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_an_ordinary_step_name_builds_a_script_that_imports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = toy_with_step(tmp_path, "fit_step")
    out = tmp_path / "out"
    code, output = run(capsys, "build", str(spec), "-o", str(out))
    assert code == 0, output
    result = subprocess.run([sys.executable, "-c", "import toy"], cwd=out / "toy", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
