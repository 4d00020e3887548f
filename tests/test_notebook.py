"""The notebook: valid nbformat v4, same definitions as the script, executes headlessly in smoke mode."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator.build import build_spec
from generator.errors import OutputError
from generator.index import build_index
from generator.notebook import NOTEBOOK_ONLY_NAMES, colab_url

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"


@pytest.fixture(scope="module")
def toy_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("repository")
    (repository / ".git").mkdir()  # the badge links the notebook's path in its repository
    return build_spec(TOY, repository / "build", index=build_index(CATALOG), repo_url="https://github.com/example/sigmae-gen").out_dir


def read(build: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(build / "toy.ipynb", as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_structure_title_badge_parameters_and_one_cell_per_module(toy_build: Path) -> None:
    notebook = read(toy_build)
    cells = notebook.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# toy")
    assert "https://colab.research.google.com/github/example/sigmae-gen/blob/main/build/toy/toy.ipynb" in cells[0].source
    tagged = [cell for cell in cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and "SMOKE = False" in tagged[0].source
    script = (toy_build / "toy.py").read_text()
    modules = [line.removeprefix("# %% ") for line in script.splitlines() if line.startswith("# %% components/")]
    headings = [cell.source.splitlines()[0] for cell in cells if cell.cell_type == "markdown" and cell.source.startswith("### `")]
    assert headings == [f"### `{path}`" for path in modules]
    assert [cell.id for cell in cells] == [f"cell-{i:02d}" for i in range(len(cells))]
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    steps = [cell.source for cell in cells if cell.cell_type == "code" and cell.source.startswith("run_steps(")]
    assert steps == ["run_steps(1)", "run_steps(2)"]  # one run cell per recipe step


def script_namespace(build: Path) -> dict[str, object]:
    module = types.ModuleType("toy_script")
    sys.modules["toy_script"] = module
    try:
        exec(compile((build / "toy.py").read_text(), "toy.py", "exec", dont_inherit=True), module.__dict__)
    finally:
        del sys.modules["toy_script"]
    return {k: v for k, v in vars(module).items() if not k.startswith("__")}


def notebook_namespace(build: Path, run_cells: bool) -> dict[str, object]:
    """Execute the code cells like a kernel does (the __future__ import holds for later cells)."""
    import __future__

    module = types.ModuleType("toy_notebook")
    sys.modules["toy_notebook"] = module
    flags = __future__.annotations.compiler_flag
    try:
        for cell in read(build).cells:
            if cell.cell_type != "code" or (not run_cells and (cell.source.startswith("run_steps(") or "rglob" in cell.source)):
                continue
            exec(compile(cell.source, "<cell>", "exec", flags=flags, dont_inherit=True), module.__dict__)
    finally:
        del sys.modules["toy_notebook"]
    return {k: v for k, v in vars(module).items() if not k.startswith("__")}


def test_code_cells_define_the_same_names_as_the_script(toy_build: Path) -> None:
    script = script_namespace(toy_build)
    notebook = notebook_namespace(toy_build, run_cells=False)
    assert set(script) <= set(notebook)
    assert set(notebook) - set(script) <= NOTEBOOK_ONLY_NAMES
    for name, value in script.items():
        if isinstance(value, type):
            assert isinstance(notebook[name], type) and notebook[name].__qualname__ == value.__qualname__
    assert notebook["Config"]().model.kernel == script["Config"]().model.kernel == (5, 7)


def test_notebook_executes_headlessly_in_smoke_mode(toy_build: Path, tmp_path: Path) -> None:
    from nbclient import NotebookClient

    notebook = read(toy_build)
    out_dir = tmp_path / "run"
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            # papermill-style injection: later assignments win
            cell.source += f"\nSMOKE = True\nOUT_DIR = {str(out_dir)!r}\nEXTRA_ARGS = ['--steps', '2']\n"
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    summary = json.loads((out_dir / "summary.json").read_text())
    # One cell per step, each resuming: the second cell continued the first one's checkpoint.
    assert summary["pretrain"]["resumed_from"] == 2 and summary["evaluate"]["fit_steps"] == 4
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == []


def test_colab_url_needs_a_github_repository() -> None:
    assert colab_url("https://github.com/a/b.git", "build/x/x.ipynb") == "https://colab.research.google.com/github/a/b/blob/main/build/x/x.ipynb"
    with pytest.raises(OutputError):
        colab_url("ftp://example.org/x", "build/x/x.ipynb")


def test_repo_url_for_the_badge_comes_from_pyproject_on_every_python(tmp_path: Path) -> None:
    from generator.repository import pyproject_repo_url

    assert pyproject_repo_url(tmp_path) is None  # no pyproject.toml
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nrepo-url = "https://github.com/wrong/table"\n\n'
        '[tool.sigmae-gen]  # settings\nrepo-url = "https://github.com/acme/sigmae-gen"  # the badge\n'
    )
    assert pyproject_repo_url(tmp_path) == "https://github.com/acme/sigmae-gen"


def _nbformat_text(document: object) -> str:
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False, separators=(",", ": ")) + "\n"


@pytest.mark.parametrize("name", sorted(p.parent.name for p in (ROOT / "build").glob("*/*.ipynb")))
def test_notebook_writer_equals_json_on_every_shipped_notebook(name: str) -> None:
    from generator.notebook import notebook_text

    text = (ROOT / "build" / name / f"{name}.ipynb").read_text(encoding="utf-8")
    assert notebook_text(json.loads(text)) == _nbformat_text(json.loads(text)) == text


_json_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_documents = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)


@given(_documents)
def test_notebook_writer_equals_json_on_any_document(document: object) -> None:
    """Quotes, backslashes, control characters, non-ASCII, empty and nested containers, tuples."""
    from generator.notebook import notebook_text

    assert notebook_text(document) == _nbformat_text(document)
