"""Atomic output: a build replaces the folder whole or not at all, and never writes outside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import generator.build
import generator.write
from generator.build import build_spec
from generator.errors import OutputError
from generator.index import build_index
from generator.write import compare_outputs, write_outputs

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_write_replaces_the_whole_folder(tmp_path: Path) -> None:
    write_outputs(tmp_path, "demo", {"a.py": "one\n", "stale.txt": "old\n"})
    dest = write_outputs(tmp_path, "demo", {"a.py": "two\n"})
    assert snapshot(dest) == {"a.py": b"two\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary folders left


def test_a_failure_while_writing_leaves_the_previous_output_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_outputs(tmp_path, "demo", {"a.py": "one\n", "b.py": "one\n"})
    before = snapshot(tmp_path)
    calls = []
    real = generator.write._write_file

    def failing(path: Path, content: str | bytes) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, content)

    monkeypatch.setattr(generator.write, "_write_file", failing)
    with pytest.raises(OSError):
        write_outputs(tmp_path, "demo", {"a.py": "two\n", "b.py": "two\n"})
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_failed_swap_restores_the_previous_output_and_leaves_no_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    write_outputs(tmp_path, "demo", {"a.py": "one\n"})
    before = snapshot(tmp_path)
    calls = []
    real = os.rename

    def failing(source, target) -> None:  # 1: moving the previous build aside, 2: moving the new one in
        calls.append(source)
        if len(calls) == failing_call:
            raise PermissionError(13, "Permission denied")
        real(source, target)

    monkeypatch.setattr(generator.write.os, "rename", failing)
    with pytest.raises(PermissionError):
        write_outputs(tmp_path, "demo", {"a.py": "two\n"})
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_failing_render_leaves_the_previous_build_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = build_index(CATALOG)
    dest = build_spec(TOY, tmp_path, index=index).out_dir
    before = snapshot(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("renderer crashed half-way")

    monkeypatch.setattr(generator.build, "render_notebook", broken)
    with pytest.raises(RuntimeError):
        build_spec(TOY, tmp_path, index=index)
    assert snapshot(tmp_path) == before and dest.is_dir()


@pytest.mark.parametrize("name", ["../escape.py", "sub/dir.py", "..", "", "a\\b.py"])
def test_file_names_must_stay_inside_the_output_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(OutputError):
        write_outputs(tmp_path / "out", "demo", {name: "x"})
    assert not (tmp_path / "out" / "demo").exists() and not (tmp_path / "escape.py").exists()


def test_build_names_must_be_identifiers(tmp_path: Path) -> None:
    with pytest.raises(OutputError):
        write_outputs(tmp_path, "../up", {"a.py": "x"})


def test_an_output_path_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        write_outputs(tmp_path / "file", "demo", {"a.py": "x"})


def test_compare_reports_changed_missing_and_extra_files_with_a_short_diff(tmp_path: Path) -> None:
    dest = write_outputs(tmp_path, "demo", {"a.py": "".join(f"line {i}\n" for i in range(200)), "gone.py": "x\n", "extra.txt": "x\n"})
    (dest / "gone.py").unlink()
    drift = compare_outputs(dest, {"a.py": "".join(f"line {i}\n" for i in range(200) if i % 2), "gone.py": "x\n"}, max_lines=20)
    assert drift.changed == ("a.py",) and drift.missing == ("gone.py",) and drift.extra == ("extra.txt",)
    assert "-line 0" in drift.diff and "more diff lines" in drift.diff and not drift.clean
    assert compare_outputs(dest, {"a.py": (dest / "a.py").read_text(), "extra.txt": "x\n"}).clean
