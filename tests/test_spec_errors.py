"""Golden bad specs: each file in tests/bad_specs/ states the error it must produce.

The first line of a case reads `# expect: [file:]line:column message`. Building it through the
CLI must exit 2 with one line naming that place and message, and must not create or change
any output folder. Files starting with `_` are helpers (e.g. the other half of a cycle).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.cli import main

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
CASES = sorted(path for path in (HERE / "bad_specs").glob("*.yaml") if not path.name.startswith("_"))


def expectation(case: Path) -> tuple[str, str]:
    first = case.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{case.name}: first line must be '# expect: [file:]line:col message'"
    location, message = first.removeprefix("# expect: ").split(" ", 1)
    if location.count(":") == 1:
        location = f"{case.name}:{location}"
    return location, message


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_there_are_at_least_twelve_golden_cases() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_bad_spec_exits_2_with_located_message_and_writes_nothing(case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    location, message = expectation(case)
    fresh_out = tmp_path / "fresh"
    kept_out = tmp_path / "kept"
    (kept_out / "toy").mkdir(parents=True)
    (kept_out / "toy" / "toy.py").write_text("previous build\n")
    before = snapshot(kept_out)

    assert main(["--catalog", str(CATALOG), "build", str(case), "-o", str(fresh_out)]) == 2
    assert main(["--catalog", str(CATALOG), "build", str(case), "-o", str(kept_out)]) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, f"expected one line per run, got: {err}"
    line = err[0]
    assert line.startswith(f"error: {location}: "), line
    assert message in line, line
    assert "Traceback" not in line
    assert not fresh_out.exists()
    assert snapshot(kept_out) == before


def test_debug_flag_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    case = HERE / "bad_specs" / "unknown_parameter.yaml"
    assert main(["--debug", "--catalog", str(CATALOG), "check", str(case)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "Did you mean 'width'?" in err
