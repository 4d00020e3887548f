"""The emitted script: deterministic, self-contained, lint-clean, and immune to spec injection."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings, strategies as st

from generator.build import build_spec, compile_spec, render_outputs
from generator.index import build_index
from generator.lint import lint
from generator.render import docstring_source, literal_source, merge_imports, render_script, script_parts

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"


@pytest.fixture(scope="module")
def index():
    return build_index(CATALOG)


@pytest.fixture(scope="module")
def toy_build(index, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    return build_spec(TOY, out, index=index).out_dir


def test_two_builds_are_byte_identical(index, tmp_path: Path, toy_build: Path) -> None:
    again = build_spec(TOY.relative_to(Path.cwd()) if TOY.is_relative_to(Path.cwd()) else TOY, tmp_path, index=index).out_dir
    for path in sorted(toy_build.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    assert sorted(p.name for p in again.iterdir()) == ["README.md", "test_toy.py", "toy.ipynb", "toy.map.json", "toy.py"]


def test_script_runs_help_in_an_isolated_interpreter(toy_build: Path, tmp_path: Path) -> None:
    script = tmp_path / "elsewhere" / "toy.py"
    script.parent.mkdir()
    shutil.copy(toy_build / "toy.py", script)
    empty = tmp_path / "cwd"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-I", str(script), "--help"], cwd=empty, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--model.width" in done.stdout and "--pretrain.epochs" in done.stdout and "--smoke" in done.stdout
    assert list(empty.iterdir()) == []


def test_emitted_files_are_lint_clean_and_tree_shaken(toy_build: Path) -> None:
    script = (toy_build / "toy.py").read_text()
    assert [str(p) for p in lint(script, "toy.py")] == []
    assert [str(p) for p in lint((toy_build / "test_toy.py").read_text(), "test_toy.py")] == []
    assert "class UnusedModel" not in script and "class DeepModel" not in script  # never chosen
    assert "registry" not in script and "import components" not in script and "from components" not in script
    # `helper` exists in two catalog modules: one keeps its name, the other is renamed everywhere.
    assert script.count("def helper") == 2 and "def helper_tiny" in script


def test_provenance_header_names_spec_version_and_hash_of_sources(toy_build: Path, tmp_path: Path) -> None:
    import generator

    head = (toy_build / "toy.py").read_text().splitlines()[:6]
    assert f"sigmae-gen {generator.__version__}" in head[0] and "spec toy" in head[0]
    digest = head[2].removeprefix("# sha256: ")
    assert len(digest) == 64
    assert not re.search(r"\d{4}-\d{2}-\d{2}|\d{2}:\d{2}:\d{2}", "\n".join(head))  # no timestamps
    catalog = tmp_path / "catalog"
    shutil.copytree(CATALOG, catalog, ignore=shutil.ignore_patterns(".sigmae-cache", "__pycache__"))
    scale = catalog / "components" / "transforms" / "scale.py"
    scale.write_text(scale.read_text() + "\n# an edit changes the hash\n")
    changed = compile_spec(TOY, index=build_index(catalog, cache_dir=tmp_path / "cache"))
    assert changed.spec_hash != digest


def test_config_defaults_are_the_spec_values(toy_build: Path) -> None:
    module = load_module((toy_build / "toy.py").read_text(), "toy_defaults")
    config = module.Config()
    assert config.model.kernel == (5, 7) and config.model.tags == ["a", "b"] and config.model.limit == math.inf
    assert config.model.tags is not module.Config().model.tags  # mutable defaults are per instance
    assert config.pretrain.schedule == (1.0, 0.5) and config.data.root == "data/toy"
    pipeline = module.build_pipeline()
    assert [step.section for step in pipeline.steps] == ["pretrain", "evaluate"]
    assert pipeline.smoke_data is module.SyntheticToy and pipeline.model is module.TinyModel


def test_literals_and_helpers() -> None:
    assert literal_source(float("-inf")) == '-float("inf")' and literal_source((1,)) == "(1,)"
    assert eval(docstring_source('a """ b\\')) == 'a """ b\\'
    assert merge_imports(["from typing import Any", "import os", "from typing import Any, Literal", "from __future__ import annotations"]) == [
        "import os",
        "from typing import Any, Literal",
    ]


def test_long_from_imports_are_wrapped_as_black_wraps_them() -> None:
    import black

    names = ", ".join(f"name_{i:02d}" for i in range(12))
    lines = merge_imports([f"from typing import {names}", "import torch", "from torch import nn"])
    assert lines[0].startswith("from typing import (\n    name_00,\n") and lines[1:] == ["", "import torch", "from torch import nn"]
    block = "\n".join(lines) + "\n"
    assert black.format_str(block, mode=black.Mode(line_length=88)) == block


def load_module(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module  # dataclasses look their module up while building classes
    try:
        exec(compile(source, f"<{name}>", "exec", dont_inherit=True), module.__dict__)
    finally:
        del sys.modules[name]
    return module


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30) | st.sampled_from(
    ['"); import os; os.system("touch PWNED")', "'''\n__import__('os').system('touch PWNED')\n'''", '"""', "\\", "\n# %%\nraise SystemExit", "{{ spec }}", "{% raw %}"]
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


@settings(deadline=None, max_examples=min(60, settings().max_examples))
@given(label=TEXT, description=TEXT, tags=st.lists(TEXT, max_size=3), scale=FLOATS, layout=st.lists(st.lists(FLOATS, max_size=3), max_size=3))
def test_spec_values_come_out_as_equal_config_values_and_never_execute(
    index, tmp_path_factory: pytest.TempPathFactory, label: str, description: str, tags: list[str], scale: float, layout: list[list[float]]
) -> None:
    document = {
        "name": "inj",
        "description": description,
        "data": {"use": "toy"},
        "transform": {"use": "scale"},
        "model": {"use": "tiny", "with": {"label": label, "tags": tags, "scale": scale, "layout": layout}},
        "recipe": [{"use": "fit", "name": "pretrain"}],
        "smoke": {"model": {"label": label}},
    }
    text = yaml.safe_dump(document, allow_unicode=True)
    assume(same(yaml.safe_load(text), document))  # only what YAML itself can carry
    folder = tmp_path_factory.mktemp("inj")
    (folder / "inj.yaml").write_text(text, encoding="utf-8")
    compiled = compile_spec(folder / "inj.yaml", index=index)
    source = render_script(compiled.spec, compiled.program, spec_hash=compiled.spec_hash, parts=script_parts(compiled.spec, compiled.program, spec_hash=compiled.spec_hash))
    module = load_module(source, "inj_module")
    config = module.Config()
    assert config.model.label == label and config.model.tags == tags
    assert same(config.model.scale, scale) and same(config.model.layout, layout)
    assert module.build_pipeline().smoke == {"model": {"label": label}}
    assert (module.__doc__ or "").startswith(description.strip())
    assert not Path("PWNED").exists()
    assert [str(p) for p in lint(source)] == []


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN and -0.0 differs from 0.0 (exact round trip)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def test_render_outputs_lists_every_output(index) -> None:
    files = render_outputs(compile_spec(TOY, index=index))
    assert set(files) == {"toy.py", "toy.ipynb", "test_toy.py", "README.md", "toy.map.json"}
    readme = files["README.md"]
    assert "--model.width" in readme and "`3`" in readme and "torchrun --nproc_per_node" in readme and "--smoke" in readme


def test_builds_in_fresh_processes_with_different_hash_seeds_are_identical(tmp_path: Path) -> None:
    import os

    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        command = [sys.executable, "-m", "generator.cli", "--catalog", str(CATALOG), "build", str(TOY), "-o", str(out)]
        done = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append({p.name: p.read_bytes() for p in (out / "toy").iterdir()})
    assert outputs[0] == outputs[1]


def test_annotation_names_follow_the_inliners_renames() -> None:
    from generator.ir import Component, InlinedProgram, Param
    from generator.render import field_annotation
    from generator.spec import Choice, Location

    param = Param("mode", "Mode | None", "None", 3)
    component = Component("model", "m", "1.0", "components.models.m", "M", Path("components/models/m.py"), 1, (param,))
    choice = Choice("model", component, {"mode": None}, frozenset(), Location("s.yaml", 1, 1))
    program = InlinedProgram((), (), {("components.models.m", "Mode"): "Mode_m", ("components.models.m", "M"): "M"})
    assert field_annotation(choice, param, program) == "Mode_m | None"
    assert field_annotation(choice, param, InlinedProgram((), (), {("components.models.m", "Mode"): "Mode"})) == "Mode | None"


def test_skeleton_imports_typing_names_and_rejects_names_the_script_cannot_define() -> None:
    from types import SimpleNamespace

    from generator.errors import SigmaeError
    from generator.ir import Component, InlinedProgram, Param
    from generator.render import skeleton_imports
    from generator.spec import Choice, Location

    mode = Param("mode", 'Literal["a", "b"]', '"a"', 2)
    gadget = Param("gadget", "Gadget | None", "None", 3)
    component = Component("model", "m", "1.0", "components.models.m", "M", Path("components/models/m.py"), 1, (mode,))
    program = InlinedProgram((), (), {("components.models.m", "M"): "M"})
    choice = Choice("model", component, {"mode": "a"}, frozenset(), Location("s.yaml", 1, 1))
    assert skeleton_imports(SimpleNamespace(sections=(choice,)), program) == [
        "from dataclasses import dataclass, field",
        "from typing import Literal",
    ]

    component = Component("model", "m", "1.0", "components.models.m", "M", Path("components/models/m.py"), 1, (mode, gadget))
    choice = Choice("model", component, {"mode": "a", "gadget": None}, frozenset(), Location("s.yaml", 1, 1))
    with pytest.raises(SigmaeError) as caught:
        skeleton_imports(SimpleNamespace(sections=(choice,)), program)
    assert str(caught.value).startswith("components/models/m.py:3:1: annotation of M(gadget: Gadget | None) names 'Gadget'")


def test_a_schema_parameter_named_field_does_not_shadow_dataclasses_field() -> None:
    from types import SimpleNamespace

    from generator.ir import Component, InlinedProgram, Param
    from generator.render import section_spec, skeleton_imports
    from generator.spec import Choice, Location

    params = (Param("field", "str", '"label"', 2), Param("columns", "list[int]", "[1, 2]", 3))
    component = Component("data", "d", "1.0", "components.data.d", "D", Path("components/data/d.py"), 1, params)
    choice = Choice("data", component, {"field": "label", "columns": [1, 2]}, frozenset(), Location("s.yaml", 1, 1))
    program = InlinedProgram((), (), {("components.data.d", "D"): "D"})
    section = section_spec(choice, program)
    source = "\n".join(
        [*skeleton_imports(SimpleNamespace(sections=(choice,)), program), "", "@dataclass", "class DataConfig:"]
        + [f"    {f.name}: {f.annotation} = {f.default}" for f in section.fields]
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "<section>", "exec"), namespace)  # with a bare `field(...)` this raises TypeError
    config = namespace["DataConfig"]()
    assert config.field == "label" and config.columns == [1, 2]
    assert config.columns is not namespace["DataConfig"]().columns  # still a fresh list per instance


def test_emitted_toy_script_is_black_stable(toy_build: Path) -> None:
    import black

    script = (toy_build / "toy.py").read_text()
    assert black.format_str(script, mode=black.Mode(line_length=88)) == script


def test_chunk_views_keep_a_catalog_comment_that_looks_like_a_cell_marker() -> None:
    from generator.ir import InlinedProgram, ModuleChunk
    from generator.render import chunk_views

    code = "# %% helpers of the front end\ndef f() -> int:\n    return 1\n"
    program = InlinedProgram((), (ModuleChunk("components.m", "components/m.py", "The m module.\n\nMore.", code),), {})
    (view,) = chunk_views(program)
    assert view.code == code.strip("\n") and view.comments == ("# The m module.",) and view.opens_with_definition
