"""End to end on the real catalog: a quick spec builds into a clean, self-contained script, notebook and suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from generator.build import build_spec
from generator.lint import lint
from generator.notebook import NOTEBOOK_ONLY_NAMES

HERE = Path(__file__).resolve().parent
QUICK = HERE / "fixture_specs" / "quick_audio.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_spec(QUICK, tmp_path_factory.mktemp("build")).out_dir


def test_outputs_are_lint_clean_and_hold_no_catalog_imports(quick_build: Path) -> None:
    for name in ("quick_audio.py", "test_quick_audio.py"):
        text = (quick_build / name).read_text()
        assert [str(p) for p in lint(text, name)] == [], name
        assert "from components" not in text and "import components" not in text
    script = (quick_build / "quick_audio.py").read_text()
    assert "class AudioMAEPlusPlus" in script and "class RadioML" not in script and "IQSpectrogram" not in script


def test_script_help_runs_isolated_from_an_empty_folder(quick_build: Path, tmp_path: Path) -> None:
    script = tmp_path / "alone" / "quick_audio.py"
    script.parent.mkdir()
    shutil.copy(quick_build / "quick_audio.py", script)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-I", str(script), "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--model.img_size" in done.stdout and "--pretrain.epochs" in done.stdout


def test_emitted_smoke_and_resume_tests_pass_from_a_bare_copy(quick_build: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / "quick_audio"
    shutil.copytree(quick_build, copy)
    done = subprocess.run(
        [sys.executable, "-I", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "smoke_train_steps or checkpoint_round_trip", "test_quick_audio.py"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout


def test_notebook_cells_define_the_script_names(quick_build: Path) -> None:
    import __future__

    notebook = nbformat.read(quick_build / "quick_audio.ipynb", as_version=4)
    nbformat.validate(notebook)
    script_module = types.ModuleType("quick_script")
    notebook_module = types.ModuleType("quick_notebook")
    for module in (script_module, notebook_module):
        sys.modules[module.__name__] = module
    try:
        exec(compile((quick_build / "quick_audio.py").read_text(), "quick_audio.py", "exec", dont_inherit=True), script_module.__dict__)
        for cell in notebook.cells:
            # every code cell but the run cells and the last one (it shows the plots of a run)
            if cell.cell_type == "code" and not cell.source.startswith("run_steps(") and cell is not notebook.cells[-1]:
                exec(compile(cell.source, "<cell>", "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True), notebook_module.__dict__)
    finally:
        for module in (script_module, notebook_module):
            del sys.modules[module.__name__]
    script_names = {k for k in vars(script_module) if not k.startswith("__")}
    notebook_names = {k for k in vars(notebook_module) if not k.startswith("__")}
    assert script_names <= notebook_names and notebook_names - script_names <= NOTEBOOK_ONLY_NAMES


SHIPPED = sorted((HERE.parent / "specs").glob("*.yaml"))


@pytest.mark.parametrize("spec_path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_specs_render_clean_tree_shaken_outputs(spec_path: Path) -> None:
    from generator.build import compile_spec, render_outputs

    compiled = compile_spec(spec_path)
    files = render_outputs(compiled)
    name = compiled.spec.name
    for file_name in (f"{name}.py", f"test_{name}.py"):
        assert [str(p) for p in lint(files[file_name], file_name)] == [], file_name
    nbformat.validate(nbformat.reads(files[f"{name}.ipynb"], as_version=4))
    if compiled.spec.data.component.name.startswith("esc50"):
        script = files[f"{name}.py"]
        for iq_name in ("class RadioML", "class SyntheticIQ", "class IQSpectrogram", "class IQPatches"):
            assert iq_name not in script, iq_name


def test_script_head_is_black_stable(quick_build: Path) -> None:
    """Header, import block and the first module (it opens with a constant, not a def) as black writes them."""
    import black

    script = (quick_build / "quick_audio.py").read_text()
    second_module = script.index("\n# %% ", script.index("\n# %% ") + 1)
    head = script[:second_module].rstrip("\n") + "\n"
    assert black.format_str(head, mode=black.Mode(line_length=88)) == head
