"""The source map and `sigmae-gen diff`: edits of an emitted script or notebook flow back as catalog patches.

One build of the ESC-50 baseline spec into a temporary folder per module; every test edits a
copy of its output. No training runs.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from generator.build import PROJECT_ROOT, build_spec
from generator.cli import main as cli_main
from generator.diff import merge_definition

SPEC = PROJECT_ROOT / "specs" / "esc50_baseline.yaml"
NAME = "esc50_baseline"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("diff_build")
    result = build_spec(SPEC, out)
    folder = result.out_dir
    return folder, json.loads((folder / f"{NAME}.map.json").read_text())


def _script(folder: Path) -> str:
    return (folder / f"{NAME}.py").read_text()


def _entry(source_map, symbol: str, catalog: str | None = None):
    found = [d for d in source_map["definitions"] if d["symbol"] == symbol and (catalog is None or d["catalog"] == catalog)]
    assert len(found) == 1, (symbol, found)
    return found[0]


def _diff(tmp_path: Path, edited_text: str, build: Path, suffix: str = ".py", capsys=None) -> tuple[int, str, str]:
    edited = tmp_path / f"edited{suffix}"
    edited.write_text(edited_text)
    code = cli_main(["diff", str(edited), "--build", str(build)])
    out, err = capsys.readouterr()
    return code, out, err


def _catalog_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "components", copy / "components", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(copy)], check=True)
    return copy


def _git_apply(project: Path, patch: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "apply", *extra, "-"], cwd=project, input=patch, text=True, capture_output=True)


def test_map_ranges_open_with_the_emitted_definition(built):
    folder, source_map = built
    lines = _script(folder).splitlines()
    module = ast.parse(_script(folder))
    defined = {node.name for node in module.body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}
    checked = 0
    for entry in source_map["definitions"]:
        first, last = entry["script_lines"]
        assert lines[first - 1].startswith(f"# {entry['catalog']}::{entry['symbol']}  (sha256:{entry['sha256']})")
        code = [line for line in lines[first - 1 : last] if line.strip() and not line.startswith(("#", "@"))]
        emitted = {v: k for k, v in entry["renames"].items()}.get(entry["symbol"], entry["symbol"])
        if emitted in defined:
            assert code[0].startswith((f"def {emitted}(", f"class {emitted}(", f"class {emitted}:")), (entry, code[0])
            checked += 1
        assert last == len(lines) or not lines[last].strip() or lines[last].startswith("#"), entry  # nothing cut off
    assert checked > 100
    parts = {(p["part"], p.get("name")) for p in source_map["skeleton"]}
    assert {("header", None), ("imports", None), ("config", "Config"), ("entry", "main"), ("entry", "build_pipeline"), ("guard", None)} <= parts
    assert json.dumps(source_map, sort_keys=True, indent=1, ensure_ascii=False) + "\n" == (folder / f"{NAME}.map.json").read_text()
    assert "/tmp" not in (folder / f"{NAME}.map.json").read_text()


def test_map_is_checked_and_rebuilt_byte_identical(built, tmp_path):
    folder, _ = built
    again = build_spec(SPEC, tmp_path).out_dir
    assert (again / f"{NAME}.map.json").read_bytes() == (folder / f"{NAME}.map.json").read_bytes()
    (again / f"{NAME}.map.json").write_text("{}\n")
    result = build_spec(SPEC, tmp_path, check=True)
    assert f"{NAME}.map.json" in result.drift.changed


def test_model_method_edit_becomes_a_catalog_patch_that_applies_and_rebuilds(built, tmp_path, capsys):
    folder, source_map = built
    entry = _entry(source_map, "Attention", "components/models/layers.py")
    text = _script(folder)
    anchor = "        dropout_p = self.attn_drop if self.training else 0.0\n"
    assert text.count(anchor) == 1
    edited = text.replace(anchor, anchor + "        q = q * 1.0  # experiment\n")
    code, patch, err = _diff(tmp_path, edited, folder, capsys=capsys)
    assert code == 0, err
    assert patch.startswith("diff --git a/components/models/layers.py b/components/models/layers.py\n")
    assert patch.count("diff --git") == 1
    start, end = entry["source_lines"]
    hunk = patch.split("@@ -")[1]
    assert start <= int(hunk.split(",")[0]) + 3 <= end
    assert "+        q = q * 1.0  # experiment\n" in patch
    project = _catalog_copy(tmp_path)
    assert _git_apply(project, patch, "--check").returncode == 0
    assert _git_apply(project, patch).returncode == 0
    patched = (project / "components/models/layers.py").read_text()
    catalog = (PROJECT_ROOT / "components/models/layers.py").read_text()
    assert patched == catalog.replace(anchor, anchor + "        q = q * 1.0  # experiment\n", 1)
    # a rebuild from the patched catalog emits the edited definition
    rebuilt = build_spec(SPEC, tmp_path / "rebuilt", catalog_root=project).out_dir
    assert anchor + "        q = q * 1.0  # experiment\n" in _script(rebuilt)


def test_renamed_definition_maps_back_to_its_catalog_name(built, tmp_path, capsys):
    folder, source_map = built
    entry = _entry(source_map, "_read", "components/models/checkpoints.py")
    assert entry["renames"]["_read_checkpoints"] == "_read"
    text = _script(folder)
    first, last = entry["script_lines"]
    lines = text.splitlines(keepends=True)
    body = "".join(lines[first - 1 : last])
    edited_body = body.replace("def _read_checkpoints(\n", "def _read_checkpoints(  # edited\n")
    assert edited_body != body
    edited = "".join(lines[: first - 1]) + edited_body + "".join(lines[last:])
    code, patch, err = _diff(tmp_path, edited, folder, capsys=capsys)
    assert code == 0, err
    assert "-def _read(\n+def _read(  # edited\n" in patch
    assert "_read_checkpoints" not in patch and "Mapping_abc" not in patch
    assert _git_apply(_catalog_copy(tmp_path), patch, "--check").returncode == 0


def test_notebook_cell_edit_maps_like_the_script(built, tmp_path, capsys):
    folder, source_map = built
    entry = _entry(source_map, "AudioMAE", "components/models/audiomae.py")
    notebook = json.loads((folder / f"{NAME}.ipynb").read_text())
    cell = notebook["cells"][entry["notebook"]["cell"]]
    source = "".join(cell["source"])
    line = "class AudioMAE(MaskedAutoencoderViT):\n"
    assert source.count(line) == 1
    cell["source"] = source.replace(line, "class AudioMAE(MaskedAutoencoderViT):  # edited\n").splitlines(keepends=True)
    code, patch, err = _diff(tmp_path, json.dumps(notebook, indent=1), folder, ".ipynb", capsys=capsys)
    assert code == 0, err
    assert patch.startswith("diff --git a/components/models/audiomae.py")
    # the registry decorator the inliner dropped stays in the catalog, above the edited line
    assert ' @model_registry.register("baseline", version="1.0")\n-class AudioMAE(MaskedAutoencoderViT):\n+class AudioMAE(MaskedAutoencoderViT):  # edited\n' in patch
    assert _git_apply(_catalog_copy(tmp_path), patch, "--check").returncode == 0


def test_config_default_edit_is_reported_as_a_spec_change(built, tmp_path, capsys):
    folder, _ = built
    text = _script(folder)
    start = text.index("class PretrainConfig")
    field = text.index("    epochs: int = ", start)
    end = text.index("\n", field)
    old = text[field:end].rsplit(" ", 1)[1]
    edited = text[:field] + "    epochs: int = 20" + text[end:]
    code, out, err = _diff(tmp_path, edited, folder, capsys=capsys)
    assert code == 0
    assert out == "no edits\n" or "diff --git" not in out
    assert f"Config.pretrain.epochs default {old} → 20" in err
    assert "specs/esc50_baseline.yaml" in err and "--pretrain.epochs 20" in err


def test_unmappable_addition_is_listed_with_its_lines(built, tmp_path, capsys):
    folder, _ = built
    text = _script(folder)
    edited = text.replace("\ndef main(", "\ndef helper_new():\n    return 1\n\n\ndef main(", 1)
    number = edited.splitlines().index("def helper_new():") + 1
    code, out, err = _diff(tmp_path, edited, folder, capsys=capsys)
    assert code == 0
    assert "diff --git" not in out
    assert f"edited.py:{number}-" in err and "new top-level definition" in err


def test_new_definition_right_after_a_catalog_definition_is_listed(built, tmp_path, capsys):
    folder, source_map = built
    entry = _entry(source_map, "Attention", "components/models/layers.py")
    lines = _script(folder).splitlines(keepends=True)
    last = entry["script_lines"][1]
    edited = "".join(lines[:last]) + "\n\ndef helper_new():\n    return 1\n" + "".join(lines[last:])
    code, out, err = _diff(tmp_path, edited, folder, capsys=capsys)
    assert code == 0
    assert "diff --git" not in out and "new top-level definition" in err


def test_line_appended_to_a_function_body_maps_to_that_function(built, tmp_path, capsys):
    folder, source_map = built
    entry = _entry(source_map, "drop_path_rates", "components/models/layers.py")
    lines = _script(folder).splitlines(keepends=True)
    last = entry["script_lines"][1]
    assert lines[last - 1].startswith("    ") and not lines[last].strip()
    edited = "".join(lines[:last]) + "    # edited: appended\n" + "".join(lines[last:])
    code, patch, err = _diff(tmp_path, edited, folder, capsys=capsys)
    assert code == 0, err
    project = _catalog_copy(tmp_path)
    assert _git_apply(project, patch).returncode == 0
    patched = (project / entry["catalog"]).read_text().splitlines()
    assert patched[entry["source_lines"][1]] == "    # edited: appended"


@pytest.mark.parametrize(
    "base, ours, theirs, merged",
    [
        # a function-local catalog import the inliner removed stays where it was
        (["def f():", "    return y()"], ["def f():", "    from components.x import y", "    return y()"],
         ["def f(a):", "    return y(a)"], ["def f(a):", "    from components.x import y", "    return y(a)"]),
        # a registry decorator under a leading comment stays right above the definition
        (["# note", "class A:", "    x = 1"], ["# note", "@reg('a')", "class A:", "    x = 1"],
         ["# changed note", "class A(B):", "    x = 1"], ["# changed note", "@reg('a')", "class A(B):", "    x = 1"]),
        (["def f():", "    a = 1", "    return y()"], ["def f():", "    a = 1", "    from components.x import y", "    return y()"],
         ["def f():", "    a = 2", "    return z()"], ["def f():", "    a = 2", "    from components.x import y", "    return z()"]),
    ],
)
def test_merge_keeps_lines_the_inliner_dropped_inside_an_edited_stretch(base, ours, theirs, merged):
    assert merge_definition(base, ours, theirs) == merged


def test_no_edits(built, tmp_path, capsys):
    folder, _ = built
    code, out, _ = _diff(tmp_path, _script(folder), folder, capsys=capsys)
    assert (code, out) == (0, "no edits\n")


def test_changed_catalog_definition_is_refused_with_a_message(built, tmp_path, capsys):
    folder, source_map = built
    entry = _entry(source_map, "Attention", "components/models/layers.py")
    project = _catalog_copy(tmp_path)
    target = project / entry["catalog"]
    target.write_text(target.read_text().replace("        self.num_heads = num_heads\n", "        self.num_heads = int(num_heads)\n", 1))
    text = _script(folder)
    anchor = "        dropout_p = self.attn_drop if self.training else 0.0\n"
    edited = tmp_path / "edited.py"
    edited.write_text(text.replace(anchor, anchor + "        q = q * 1.0\n"))
    code = cli_main(["--catalog", str(project), "diff", str(edited), "--build", str(folder)])
    out, err = capsys.readouterr()
    assert code == 0
    assert "warning: components/models/layers.py changed since the build" in err
    assert "refused: components/models/layers.py::Attention" in err and "changed since the build" in err
    assert "diff --git" not in out


def test_catalog_file_changed_elsewhere_warns_and_still_patches(built, tmp_path, capsys):
    folder, _ = built
    project = _catalog_copy(tmp_path)
    target = project / "components/models/layers.py"
    changed = target.read_text().replace('"""Transformer building blocks', '"""Transformer building blocks (changed)', 1)
    assert changed != target.read_text()
    target.write_text("# a new first line\n" + changed)
    anchor = "        dropout_p = self.attn_drop if self.training else 0.0\n"
    edited = tmp_path / "edited.py"
    edited.write_text(_script(folder).replace(anchor, anchor + "        q = q * 1.0\n"))
    code = cli_main(["--catalog", str(project), "diff", str(edited), "--build", str(folder)])
    out, err = capsys.readouterr()
    assert code == 0
    assert "warning: components/models/layers.py changed since the build" in err
    assert _git_apply(project, out).returncode == 0
    assert anchor + "        q = q * 1.0\n" in target.read_text()


def test_a_map_that_disagrees_with_its_script_is_refused(built, tmp_path, capsys):
    folder, _ = built
    copy = tmp_path / "build"
    shutil.copytree(folder, copy)
    script = (copy / f"{NAME}.py").read_text()
    (copy / f"{NAME}.py").write_text("# one more line\n" + script)
    code, out, err = _diff(tmp_path, script.replace("import math\n", "import math  # edited\n", 1), copy, capsys=capsys)
    assert code == 2 and "does not match its source map" in err and out == ""


@pytest.mark.parametrize("case", ["no header", "missing build", "not emitted kind"])
def test_bad_input_exits_2_with_one_message(built, tmp_path, capsys, case):
    folder, _ = built
    if case == "no header":
        path = tmp_path / "plain.py"
        path.write_text("print('hello')\n")
        args = ["diff", str(path)]
        expected = "no sigmae-gen header"
    elif case == "missing build":
        path = tmp_path / "copy.py"
        path.write_text(_script(folder))
        args = ["diff", str(path), "--build", str(tmp_path / "nowhere")]
        expected = "cannot find its build"
    else:
        path = tmp_path / "notes.txt"
        path.write_text("hello\n")
        args = ["diff", str(path)]
        expected = "reads an emitted script (.py) or notebook (.ipynb)"
    code = cli_main(args)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err
    assert "--build" in err or case == "not emitted kind"
