"""The inliner: a flat program that compiles, is lint-clean, runs isolated, and is deterministic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import generator.formatting as formatting
import generator.inline as inline_module
from generator.index import CatalogError, build_index
from generator.inline import inline, program_text
from generator.lint import lint
from generator.resolve import resolve

FIXTURES = Path(__file__).parent / "fixture_catalogs"
RESERVED = ("Config", "PIPELINE", "main")


def build(root: Path, roots, cache: Path, **kwargs):
    index = build_index(root, cache_dir=cache)
    resolution = resolve(index, roots)
    return index, inline(index, resolution, cache_dir=cache, **kwargs)


def lint_problems(text: str, program, roots, filename: str = "<program>") -> list[str]:
    """generator.lint's findings; the roots are entry points (nothing in the program calls them)."""
    return [str(p) for p in lint(text, filename, entry_points=tuple(program.names[key] for key in roots))]


def run_isolated(tmp_path: Path, source: str) -> str:
    """Run ``source`` with `python -I` from an empty folder: no repo, no catalog on sys.path."""
    script = tmp_path / "program.py"
    script.write_text(source)
    workdir = tmp_path / "empty"
    workdir.mkdir()
    done = subprocess.run([sys.executable, "-I", str(script)], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def catalog(root: Path, files: dict[str, str]) -> Path:
    (root / "components").mkdir(parents=True)
    (root / "components" / "__init__.py").write_text("")
    for name, text in files.items():
        (root / "components" / name).write_text(textwrap.dedent(text))
    return root


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    index, program = build(FIXTURES / "basic", [("components.models", "demo")], cache, reserved=RESERVED)
    return index, program, cache


def test_program_compiles_is_lint_clean_and_black_stable(demo):
    _, program, _ = demo
    text = program_text(program)
    compile(text, "program.py", "exec")
    assert lint_problems(text, program, [("components.models", "demo")], "program.py") == []
    assert formatting.format_code(text) == text


def test_program_runs_isolated_and_matches_the_catalog(demo, tmp_path):
    _, program, _ = demo
    footer = "\n\nimport json\nprint(json.dumps(demo(None), sort_keys=True))\n"
    emitted = json.loads(run_isolated(tmp_path, program_text(program) + footer))
    # The same call on the imported catalog (it is importable: pure standard library).
    probe = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from components.models import demo; print(json.dumps(demo(None), sort_keys=True))"
    )
    expected = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(FIXTURES / "basic")], capture_output=True, text=True, check=True
    )
    assert emitted == json.loads(expected.stdout) == {"describe": "block:Block", "label": "demo", "out": 144.0}


def test_cyclic_catalog_inlines_into_a_program_that_runs(tmp_path):
    _, program = build(FIXTURES / "cycles", [("components.parity_a", "parity")], tmp_path / "cache")
    footer = "\n\nprint(parity(None))\n"
    out = run_isolated(tmp_path, program_text(program) + footer)
    assert out.strip() == "{'even': False, 'odd': True, 'flip': 'Even', 'down': [3, 2, 1, 0]}"


def test_chunks_are_grouped_by_module_with_docstrings(demo):
    index, program, _ = demo
    # Reader order: the model first, then the support modules in dependency order.
    assert [(c.section, c.path) for c in program.chunks] == [
        ("model", "components/models.py"),
        ("support", "components/base.py"),
        ("support", "components/util.py"),
        ("support", "components/layers/blocks.py"),
    ]
    assert program.chunks[2].docstring == "Helpers shared across the fixture catalog."
    assert program.source_files == tuple(c.path for c in program.chunks)


def test_catalog_imports_and_registry_decorators_are_removed(demo):
    text = program_text(demo[1])
    assert "components" not in "\n".join(demo[1].imports)
    assert "import components" not in text and "from components" not in text
    assert "register(" not in text and "u.helper" not in text
    assert "return helper(x) * SCALE * width" in text  # alias and module attribute rewritten


def test_imports_are_merged_sorted_and_only_what_is_used(demo):
    imports = demo[1].imports
    assert imports == (
        "import functools",
        "import math",
        "from dataclasses import dataclass, field",
        "from typing import Any, Callable",
    )
    assert not any("from __future__" in line for line in imports)


def test_docstrings_and_comments_are_kept(demo):
    text = program_text(demo[1])
    assert '"""Double, then round (keeps outputs comparable across runs)."""' in text
    assert "# Rounding keeps float noise out of the golden comparisons." in text
    assert "# Same name as components.models.scale: the inliner must rename one of them." in text


def test_collisions_are_renamed_with_every_reference_rewritten(demo):
    _, program, _ = demo
    names = program.names
    assert names[("components.base", "Config")] == "Config_base"  # reserved by the template
    assert names[("components.util", "scale")] == "scale"  # first in emission order keeps its name
    assert names[("components.models", "scale")] == "scale_models"
    text = program_text(program)
    assert "class Config_base:" in text and "config: Config_base | None" in text
    assert "Config_base(width=width)" in text
    assert "return scale_models(x) + sum(scale([x]))" in text
    assert "class Config:" not in text


def test_renaming_leaves_locals_and_attributes_alone(tmp_path):
    root = catalog(
        tmp_path / "cat",
        {
            "a.py": """
                def main():
                    return "a"
                """,
            "b.py": """
                from components.a import main as a_main

                class Holder:
                    main = "attribute"

                def main(main_arg=None):
                    obj = Holder()
                    return a_main(), obj.main, Holder.main, [main for main in "xy"], dict(main=1)

                def run():
                    return main()
                """,
        },
    )
    _, program = build(root, [("components.b", "run")], tmp_path / "cache", reserved=RESERVED)
    text = program_text(program)
    assert lint_problems(text, program, [("components.b", "run")]) == []
    out = run_isolated(tmp_path, text + "\n\nprint(run())\n")
    assert out.strip() == "('a', 'attribute', 'attribute', ['x', 'y'], {'main': 1})"
    assert program.names[("components.a", "main")] == "main_a"
    assert program.names[("components.b", "main")] == "main_b"


def test_a_definition_never_replaces_a_builtin_that_other_modules_use(tmp_path):
    root = catalog(
        tmp_path / "cat",
        {
            "a.py": "def sum(values):\n    return 'shadowed'\n\ndef total():\n    return sum([1])\n",
            "b.py": "from components.a import total\n\ndef both():\n    return total(), sum([1, 2])\n",
        },
    )
    _, program = build(root, [("components.b", "both")], tmp_path / "cache")
    assert program.names[("components.a", "sum")] == "sum_a"
    out = run_isolated(tmp_path, program_text(program) + "\n\nprint(both())\n")
    assert out.strip() == "('shadowed', 3)"


def test_external_imports_that_collide_are_aliased(tmp_path):
    root = catalog(
        tmp_path / "cat",
        {
            "a.py": "from typing import Callable\n\ndef f(g: Callable) -> str:\n    return 'a'\n",
            "b.py": (
                "from collections.abc import Callable\nfrom components.a import f\n\n"
                "def h():\n    return f(h), isinstance(h, Callable)\n"
            ),
        },
    )
    _, program = build(root, [("components.b", "h")], tmp_path / "cache")
    assert "from collections.abc import Callable as Callable_abc" in program.imports
    text = program_text(program)
    assert lint_problems(text, program, [("components.b", "h")]) == []
    assert run_isolated(tmp_path, text + "\n\nprint(h())\n").strip() == "('a', True)"


def test_function_local_catalog_imports_are_inlined(tmp_path):
    root = catalog(
        tmp_path / "cat",
        {
            "consts.py": "NAMES = ('x', 'y')\n",
            "other.py": "NAMES = ('clash',)\n\ndef names():\n    return NAMES\n",
            "a.py": (
                "from components.other import names\n\n"
                "def f():\n    from components.consts import NAMES\n\n    return NAMES, names()\n\n"
                "def g():\n    from components.consts import NAMES as N\n\n    return N\n"
            ),
        },
    )
    _, program = build(root, [("components.a", "f"), ("components.a", "g")], tmp_path / "cache")
    text = program_text(program)
    assert "from components" not in text and lint_problems(text, program, [("components.a", "f"), ("components.a", "g")]) == []
    assert run_isolated(tmp_path, text + "\n\nprint(f(), g())\n").strip() == "(('x', 'y'), ('clash',)) ('x', 'y')"


def test_a_local_that_would_hide_a_renamed_global_is_a_clear_error(tmp_path):
    root = catalog(
        tmp_path / "cat",
        {
            "u.py": "def helper():\n    return 1\n",
            "a.py": "import components.u as u\n\ndef f():\n    helper = 2\n    return u.helper() + helper\n",
        },
    )
    with pytest.raises(CatalogError, match=r"components/a\.py:3: .*'helper'.*local variable"):
        build(root, [("components.a", "f")], tmp_path / "cache")


def test_provided_definitions_are_named_but_not_emitted(tmp_path):
    index = build_index(FIXTURES / "basic", cache_dir=tmp_path / "cache")
    resolution = resolve(index, [("components.models", "demo")])
    program = inline(index, resolution, provided={("components.models", "Net"): "ScriptNet"}, cache_dir=tmp_path / "c")
    text = program_text(program)
    assert program.names[("components.models", "Net")] == "ScriptNet"
    assert "class Net" not in text and "class Block" not in text  # only Net needed Block
    assert "net = ScriptNet(depth=depth)" in text
    assert [c.path for c in program.chunks] == ["components/models.py"]
    assert program.imports == ()


def test_two_builds_are_byte_identical_and_warm_equals_cold(tmp_path, demo):
    _, cold, _ = demo
    _, fresh = build(FIXTURES / "basic", [("components.models", "demo")], tmp_path / "other", reserved=RESERVED)
    assert program_text(fresh) == program_text(cold)
    assert fresh == cold


def test_warm_build_runs_no_black_and_no_libcst(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _, cold = build(FIXTURES / "basic", [("components.models", "demo")], cache, reserved=RESERVED)
    formatting.clear_memory_caches()
    inline_module.clear_memory_caches()

    def forbidden(*args, **kwargs):
        raise AssertionError("a warm build formatted or re-parsed catalog code")

    import black

    monkeypatch.setattr(black, "format_str", forbidden)
    monkeypatch.setattr(inline_module, "_apply", forbidden)
    _, warm = build(FIXTURES / "basic", [("components.models", "demo")], cache, reserved=RESERVED)
    assert program_text(warm) == program_text(cold)


def test_real_catalog_inlines_into_a_clean_program():
    repo = Path(__file__).resolve().parents[1]
    index = build_index(repo)  # the shared build cache: warm after the first build
    roots = [component.key for component in index.components.values()]
    if not roots:
        pytest.skip("the catalog registers no components yet")
    # The contract checks too: the emitted test suite inlines them.
    roots += [
        (d.module, d.name)
        for module in index.modules
        if module.startswith("components.contracts")
        for d in index.definitions_in(module)
        if d.kind == "function" and d.name.startswith("check_")
    ]
    program = inline(index, resolve(index, roots), reserved=RESERVED)
    text = program_text(program)
    compile(text, "real.py", "exec")
    assert lint_problems(text, program, roots, "real.py") == []
    assert not any("components" in line for line in program.imports)


def test_format_cache_survives_a_damaged_entry(tmp_path):
    source = "x=1\n"
    assert formatting.format_code(source, cache_dir=tmp_path) == "x = 1\n"
    formatting.clear_memory_caches()
    for entry in (tmp_path / "black").rglob("*"):
        if entry.is_file():
            entry.write_text("garbage")
    assert formatting.format_code(source, cache_dir=tmp_path) == "x = 1\n"


def test_black_failure_names_the_source(tmp_path):
    with pytest.raises(formatting.FormatError, match="black cannot parse components/x.py:3"):
        formatting.format_code("def (:\n", what="components/x.py:3")


# A random catalog: modules m0..mN whose functions share names (and take reserved or builtin
# names), reached through plain, aliased and module-alias imports. Inlined into one
# namespace, every reference must still reach the same function: the program must print
# exactly what the imported catalog prints.
POOL = ["f", "g", "helper", "scale", "sum", "Config", "main"]


@st.composite
def random_catalogs(draw) -> dict[str, str]:
    count = draw(st.integers(2, 4))
    defined: list[list[str]] = []
    files: dict[str, str] = {}
    for i in range(count):
        names = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=3, unique=True))
        imports: list[str] = []
        refs: list[str] = []
        for j in range(i):
            for name in defined[j]:
                style = draw(st.sampled_from(["skip", "from", "alias", "module"]))
                if style == "from" and name not in names and name not in refs:
                    imports.append(f"from components.m{j} import {name}")
                    refs.append(name)
                elif style == "alias":
                    imports.append(f"from components.m{j} import {name} as {name}_of{j}")
                    refs.append(f"{name}_of{j}")
                elif style == "module":
                    line = f"import components.m{j} as mod{j}"
                    if line not in imports:
                        imports.append(line)
                    refs.append(f"mod{j}.{name}")
        body = []
        for k, name in enumerate(names):
            calls = draw(st.lists(st.sampled_from(refs + names[:k]), max_size=3)) if refs or k else []
            parts = [repr(f"m{i}.{name}"), "x", *(f"{call}()" for call in calls)]
            if "sum" not in names:
                parts.append("sum([1, 2])")  # the builtin, even where another module defines `sum`
            body.append(f"def {name}(x=0):\n    return ({', '.join(parts)},)\n")
        files[f"m{i}.py"] = "\n".join(imports) + "\n\n\n" + "\n\n".join(body)
        defined.append(names)
    return files


@given(random_catalogs())
@settings(deadline=None)
def test_renaming_preserves_what_every_reference_means(files):
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = catalog(tmp_path / "cat", files)
        last = len(files) - 1
        roots = [(f"components.m{last}", name) for name in _defined_names(files[f"m{last}.py"])]
        _, program = build(root, roots, tmp_path / "cache", reserved=RESERVED)
        text = program_text(program)
        assert lint_problems(text, program, roots) == []
        calls = ", ".join(f"{program.names[key]}()" for key in roots)
        emitted = run_isolated(tmp_path, text + f"\n\nprint(repr([{calls}]))\n")
        names = ", ".join(name for _, name in roots)
        probe = (
            f"import sys; sys.path.insert(0, sys.argv[1]); from components.m{last} import {names}; "
            f"print(repr([{', '.join(f'{n}()' for _, n in roots)}]))"
        )
        expected = subprocess.run(
            [sys.executable, "-I", "-c", probe, str(root)], capture_output=True, text=True, check=True
        ).stdout
        assert emitted == expected


def _defined_names(source: str) -> list[str]:
    return [line[4:].split("(")[0] for line in source.splitlines() if line.startswith("def ")]


def test_output_does_not_depend_on_hash_seeds(tmp_path):
    """Sets and dicts must never leak their order into the program: compare two processes."""
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from generator.index import build_index; from generator.resolve import resolve, explain;"
        "from generator.inline import inline, program_text;"
        "root, cache = Path(sys.argv[2]), Path(sys.argv[3]);"
        "index = build_index(root, cache_dir=cache);"
        "resolution = resolve(index, [('components.models', 'demo'), ('components.models', 'TinyNet')]);"
        "program = inline(index, resolution, reserved=('Config', 'main'), cache_dir=cache);"
        "print(program_text(program)); print(explain(index, resolution)); print(sorted(program.names.items()))"
    )
    repo = Path(__file__).resolve().parents[1]
    outputs = []
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", script, str(repo), str(FIXTURES / "basic"), str(tmp_path / f"cache{seed}")],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]


def test_text_cache_prunes_entries_unused_for_a_month(tmp_path):
    from generator.cache import MAX_AGE_S, TextCache

    cache = TextCache(tmp_path, "ns")
    cache.put("a" * 64, "old")
    cache.put("b" * 64, "new")
    old = tmp_path / "ns" / "aa" / ("a" * 64)
    stamp = old.stat().st_mtime - MAX_AGE_S - 10
    os.utime(old, (stamp, stamp))
    assert cache.prune(force=True) == 1
    fresh = TextCache(tmp_path, "ns")
    assert fresh.get("a" * 64) is None and fresh.get("b" * 64) == "new"
    assert fresh.prune() == 0  # pruned less than a day ago
