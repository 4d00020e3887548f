"""End to end, for every shipped spec: committed output up to date, the script's smoke run from
an empty folder in an isolated interpreter, the emitted test suite from a bare copy of the
build folder, the notebook executed headlessly in smoke mode, and visible tree shaking."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from generator.build import build_spec, load_index
from generator.lint import lint

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
NAMES = [spec.stem for spec in SPECS]


def clean_env() -> dict[str, str]:
    """The environment of a bare machine: no PYTHONPATH into this repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SIGMAE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def index():
    return load_index()


def test_every_spec_is_shipped_with_its_committed_build() -> None:
    assert NAMES == ["esc50_audiomae", "esc50_baseline", "esc50_finetune_official", "folder_audio", "radioml_audiomae"]
    for name in NAMES:
        folder = ROOT / "build" / name
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["README.md", f"{name}.py", f"{name}.ipynb", f"test_{name}.py", f"{name}.map.json"]
        ), f"build/{name}/ is incomplete: run `sigmae-gen build specs/{name}.yaml`"


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_committed_build_matches_a_fresh_build(spec: Path, index) -> None:
    result = build_spec(spec, ROOT / "build", check=True, index=index)
    assert result.up_to_date, f"build/{spec.stem}/ drifted from its spec: run `sigmae-gen build {spec.relative_to(ROOT)}`\n{result.drift}"


def test_cli_check_mode_passes_on_the_committed_outputs() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "generator.cli", "build", "--check", *map(str, SPECS)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("name", NAMES)
def test_every_top_level_definition_of_the_script_is_used(name: str) -> None:
    source = (ROOT / "build" / name / f"{name}.py").read_text()
    assert lint(source, f"{name}.py") == []


def top_level_names(source: str) -> set[str]:
    tree = ast.parse(source)
    return {node.name for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}


@pytest.mark.parametrize("name", ["esc50_audiomae", "esc50_baseline"])
def test_esc50_scripts_hold_no_radioml_or_iq_code(name: str) -> None:
    source = (ROOT / "build" / name / f"{name}.py").read_text()
    modules = [line.removeprefix("# %% ") for line in source.splitlines() if line.startswith("# %% components/")]
    assert "components/data/radioml.py" not in modules and "components/transforms/spectral.py" not in modules
    names = top_level_names(source)
    assert not {n for n in names if "radioml" in n.lower() or n.lower().startswith("iq") or "IQ" in n}, names
    # and none of the other model family either
    assert ("AudioMAE" in names) == (name == "esc50_baseline")
    assert ("AudioMAEPlusPlus" in names) == (name == "esc50_audiomae")


def test_radioml_script_holds_no_audio_file_code() -> None:
    names = top_level_names((ROOT / "build" / "radioml_audiomae" / "radioml_audiomae.py").read_text())
    assert "RadioML2016" in names and "IQSpectrogram" in names
    assert not names & {"ESC50", "AudioFolder", "KaldiFbank", "LogMel", "read_wav", "resample"}


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_in_an_isolated_interpreter_from_an_empty_folder(name: str, tmp_path: Path) -> None:
    script = ROOT / "build" / name / f"{name}.py"
    work = tmp_path / "empty"
    work.mkdir()
    completed = subprocess.run(
        [sys.executable, "-I", str(script), "--smoke"],
        cwd=work, env=clean_env(), capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary_path = work / "runs" / f"{name}-smoke" / "summary.json"
    assert summary_path.is_file(), "the smoke run writes its summary under runs/<name>-smoke/"
    summary = json.loads(summary_path.read_text())
    assert summary, "the summary holds each step's results"


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--model.img_size", "50,128"], "not a multiple of patch_size"),
        (["--model.presett", "tiny"], "did you mean --model.preset"),
        (["--data-dir", "/nonexistent/ESC-50-master"], "--download"),
    ],
    ids=["model-rejects-setting", "flag-typo", "missing-data"],
)
def test_bad_input_is_one_clear_line_and_exit_2(flags: list[str], expected: str, tmp_path: Path) -> None:
    script = ROOT / "build" / "esc50_audiomae" / "esc50_audiomae.py"
    smoke = [] if "--data-dir" in flags else ["--smoke"]
    completed = subprocess.run(
        [sys.executable, "-I", str(script), *smoke, *flags],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr and expected in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr


@pytest.mark.parametrize("name", NAMES)
def test_emitted_suite_passes_from_a_bare_copy_of_the_build_folder(name: str, tmp_path: Path) -> None:
    copy = tmp_path / name
    shutil.copytree(ROOT / "build" / name, copy)
    completed = subprocess.run(
        [sys.executable, "-I", "-m", "pytest", "-q", "-p", "no:cacheprovider", f"test_{name}.py"],
        cwd=copy, env=clean_env(), capture_output=True, text=True, timeout=400,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert " passed" in completed.stdout and " failed" not in completed.stdout


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_headlessly_in_smoke_mode(name: str, tmp_path: Path) -> None:
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "build" / name / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    out_dir = tmp_path / "run"
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    # papermill's convention: injected assignments after the parameters cell's own win
    tagged[0].source += f"\nSMOKE = True\nOUT_DIR = {str(out_dir)!r}\n"
    NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    assert (out_dir / "summary.json").is_file()


def test_the_generator_builds_every_spec_without_torch(tmp_path: Path) -> None:
    """The generator reads the catalog statically: `sigmae-gen build` never imports torch."""
    program = (
        "import sys\n"
        "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
        "from generator.cli import main\n"
        "sys.exit(main(['build', '-o', sys.argv[1], *sys.argv[2:]]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path), *map(str, SPECS)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for name in NAMES:
        for path in (ROOT / "build" / name).iterdir():
            assert (tmp_path / name / path.name).read_bytes() == path.read_bytes(), f"{name}/{path.name}"
