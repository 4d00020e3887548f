"""The `sigmae-gen` command line: exit codes, --check drift, list, explain, check, new."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generator.cli import main
from generator.index import build_index

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--catalog", str(CATALOG), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_build_then_check_is_clean_and_drift_exits_1_with_a_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "build", str(TOY), "-o", str(tmp_path))
    assert code == 0 and "built" in out
    assert run(capsys, "build", "--check", str(TOY), "-o", str(tmp_path))[0] == 0

    script = tmp_path / "toy" / "toy.py"
    script.write_text(script.read_text().replace("width: int = 3", "width: int = 4"))
    before = script.read_bytes()
    code, _, err = run(capsys, "build", "--check", str(TOY), "-o", str(tmp_path))
    assert code == 1
    assert "-    width: int = 4" in err and "+    width: int = 3" in err and "out of date" in err
    assert script.read_bytes() == before  # --check writes nothing


def test_check_without_any_build_reports_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "build", "--check", str(TOY), "-o", str(tmp_path))
    assert code == 1 and "missing:" in err and not (tmp_path / "toy").exists()


def test_set_override_changes_the_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", str(TOY), "-o", str(tmp_path), "--set", "model.with.width=11")[0] == 0
    script = (tmp_path / "toy" / "toy.py").read_text()
    assert "width: int = 11" in script and "# overrides (--set): 'model.with.width=11'" in script


def test_check_command_validates_without_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "check", str(TOY))
    assert code == 0 and "ok:" in out and "model=tiny" in out
    assert list(tmp_path.iterdir()) == []


def test_list_shows_versions_parameters_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "tiny  v1.2" in out and "kernel: tuple[int, int] = (3, 3)" in out and "depth: int  (required)" in out
    assert "fixture" not in out.split("\n")[0]
    code, out, _ = run(capsys, "list", "--kind", "recipe")
    assert code == 0 and "fit" in out and "tiny" not in out


def test_unknown_kind_and_bad_usage_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "list", "--kind", "modle")
    assert code == 2 and "Did you mean 'model'?" in err
    assert run(capsys, "build")[0] == 2  # missing SPEC
    assert run(capsys, "frobnicate")[0] == 2
    code, _, err = run(capsys, "build", str(HERE / "no_such_spec.yaml"))
    assert code == 2 and "not found" in err and "Traceback" not in err


def test_explain_gives_a_reason_for_each_definition(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", str(TOY))
    assert code == 0 and "TinyModel" in out and "helper" in out


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "0.1.0" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "build" in capsys.readouterr().out


def test_new_scaffolds_a_registered_module_with_a_failing_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(CATALOG, catalog, ignore=shutil.ignore_patterns(".sigmae-cache", "__pycache__"))
    assert main(["--catalog", str(catalog), "new", "model", "my_net"]) == 0
    module = catalog / "components" / "models" / "my_net.py"
    assert module.exists()
    index = build_index(catalog, cache_dir=tmp_path / "cache")
    component = index.components[("model", "my_net")]
    assert component.qualname == "MyNet" and {p.name for p in component.params} >= {"img_size", "embed_dim"}
    # its parameters come documented, so --help and the Args: coverage test have their text
    assert all(p.description for p in component.params), [p.name for p in component.params if not p.description]
    assert ("fixture", "model/my_net") in index.components
    package_init = (catalog / "components" / "models" / "__init__.py").read_text()
    assert "from components.models.my_net import MyNet\n" in package_init  # the run-time registry sees it
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from components.contracts.model import my_net_fixture;"
        "my_net_fixture(None)"
    )
    done = subprocess.run([sys.executable, "-I", "-c", probe, str(catalog)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "NotImplementedError: fill in the contract fixture of model 'my_net'" in done.stderr
    # A second scaffold of the same name is a user error, and changes nothing.
    before = module.read_bytes()
    assert main(["--catalog", str(catalog), "new", "model", "my_net"]) == 2
    assert module.read_bytes() == before
    assert main(["--catalog", str(catalog), "new", "widget", "x"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_new_writes_its_three_files_or_none(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import generator.scaffold

    catalog = tmp_path / "catalog"
    shutil.copytree(CATALOG, catalog, ignore=shutil.ignore_patterns(".sigmae-cache", "__pycache__"))
    before = {path: path.read_bytes() for path in (catalog / "components").rglob("*.py")}
    real_write = generator.scaffold.atomic_write_bytes

    def fails_on_the_package_init(path: Path, data: bytes) -> None:
        if path.name == "__init__.py":
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(generator.scaffold, "atomic_write_bytes", fails_on_the_package_init)
    assert main(["--catalog", str(catalog), "new", "model", "my_net"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    after = {path: path.read_bytes() for path in (catalog / "components").rglob("*.py")}
    assert after == before  # the module is gone again and the fixture file has its old text
    assert not list((catalog / "components").rglob("*.tmp"))


def test_os_errors_are_one_line_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import generator.build

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(generator.build, "write_outputs", full_disk)
    code, _, err = run(capsys, "build", str(TOY), "-o", str(tmp_path))
    assert code == 2
    assert err.strip() == "error: No space left on device; check the path, its permissions and free space"
