"""The static catalog index: components, schemas, uses, import table, cache, clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import textwrap
from pathlib import Path

import pytest

import generator.index as index_module
from generator.analysis import analyze_module
from generator.index import CatalogError, build_index

FIXTURES = Path(__file__).parent / "fixture_catalogs"


@pytest.fixture()
def basic(tmp_path: Path):
    return build_index(FIXTURES / "basic", cache_dir=tmp_path / "cache")


def write_catalog(root: Path, files: dict[str, str]) -> Path:
    """A throw-away catalog under ``root``: {"components/x.py": source}."""
    (root / "components").mkdir(parents=True, exist_ok=True)
    (root / "components" / "__init__.py").write_text('"""Test catalog."""\n')
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def uses_of(index, module: str, name: str) -> dict[str, bool]:
    return {u.name: u.eager for u in index.statements[(f"components.{module}", name)].uses}


def test_registered_components_with_kind_version_and_schema(basic):
    net = basic.component("model", "net")
    assert (net.module, net.qualname, net.version) == ("components.models", "Net", "2.0")
    assert net.path == Path("components/models.py")
    assert [(p.name, p.annotation, p.default) for p in net.params] == [
        ("depth", "int", "2"),
        ("width", "int", "4"),
        ("name", "str", '"net"'),
    ]
    assert net.doc == "A stack of blocks."
    demo = basic.component("recipe", "demo")
    # The positional-only `ctx` is injected at run time: not part of the spec schema.
    assert [p.name for p in demo.params] == ["depth", "label"]
    assert basic.component("model", "tiny_net").version == "1.0"
    assert [c.name for c in basic.components_of("model")] == ["net", "tiny_net"]


def test_inherited_constructor_parameters_come_from_the_catalog_base(basic):
    assert basic.component("model", "tiny_net").params == basic.component("model", "net").params


def test_unknown_component_suggests_the_closest_name(basic):
    with pytest.raises(CatalogError, match=r"unknown model 'nett'\. Did you mean 'net'\? Known models: net, tiny_net"):
        basic.component("model", "nett")
    with pytest.raises(CatalogError, match="known kinds: model, recipe"):
        basic.component("transform", "x")


def test_definitions_record_module_level_names_they_use(basic):
    block = basic.definitions[("components.layers.blocks", "Block")]
    assert block.kind == "class"
    # bases, decorators, default values and annotations; never locals like `width`.
    assert block.uses == {"Base", "Config", "Shape", "WIDTH", "tagged", "u", "FACTOR"}
    assert basic.definitions[("components.layers.blocks", "u")].kind == "import"
    assert basic.definitions[("components.util", "SCALE")].kind == "constant"


def test_eager_and_lazy_uses_are_told_apart(basic):
    uses = uses_of(basic, "layers.blocks", "Block")
    assert uses["Base"] and uses["WIDTH"] and uses["tagged"]  # evaluated when the class is defined
    assert not uses["Shape"] and not uses["FACTOR"]  # annotations and method bodies run later
    assert "width" not in uses and "self" not in uses
    attrs = {(a.base, a.attr) for a in basic.statements[("components.layers.blocks", "Block")].attr_uses}
    assert ("u", "helper") in attrs


def test_registry_decorators_are_not_uses(basic):
    assert "model_registry" not in uses_of(basic, "models", "Net")
    assert "recipe_registry" not in uses_of(basic, "models", "demo")


def test_statement_text_keeps_comments_and_decorators(basic):
    code = basic.statements[("components.util", "scale")].code
    assert code.startswith("def scale(")
    assert "# Same name as components.models.scale" in code
    code = basic.statements[("components.models", "Net")].code
    assert code.startswith('@model_registry.register("net", version="2.0")\nclass Net:')


def test_import_table_and_module_info(basic):
    binding = basic.imports[("components.layers.blocks", "FACTOR")]
    assert (binding.module, binding.attr) == ("components.util", "SCALE")
    alias = basic.imports[("components.layers.blocks", "u")]
    assert (alias.module, alias.attr, alias.aliased) == ("components.util", None, True)
    info = basic.modules["components.layers"]
    assert info.is_package and info.path == Path("components/layers/__init__.py")
    assert info.docstring == "Layers: re-exported from the package, as timm does."
    assert len(basic.modules["components.util"].sha256) == 64


def test_scoping_follows_python_rules():
    source = """
        from __future__ import annotations
        import torch
        X = 1
        class C:
            X = 2
            y = X              # class-level name: C.X, not the global
            def m(self, torch=None):
                return torch, X, [X for X in range(3)]   # parameter shadows; X here is global
        def f():
            global Z
            Z = X
            def g():
                nonlocal_name = 1
                return nonlocal_name, lambda X: X
            return g
        """
    analysis = analyze_module(textwrap.dedent(source), "components.m", "components/m.py")
    by_name = {s.names[0]: s for s in analysis.statements}
    assert {u.name: u.eager for u in by_name["C"].uses} == {"X": False, "range": False}
    assert {u.name for u in by_name["f"].uses} == {"Z", "X"}
    assert analysis.future_annotations


def test_string_annotations_are_forward_references_but_literals_are_not():
    source = """
        from __future__ import annotations
        from typing import Literal
        def f(x: "Block", mode: Literal["tiny", "Block2"] = "tiny") -> list["Shape"]:
            return []
        """
    analysis = analyze_module(textwrap.dedent(source), "components.m", "components/m.py")
    assert {u.name for u in analysis.statements[0].uses} == {"Block", "Literal", "list", "Shape"}


def test_warm_build_parses_nothing_and_gives_the_same_index(tmp_path, monkeypatch):
    root = tmp_path / "cat"
    shutil.copytree(FIXTURES / "basic", root)
    cold = build_index(root)
    assert (root / ".sigmae-cache").is_dir()

    def fail(*args, **kwargs):
        raise AssertionError("warm build re-parsed a file")

    monkeypatch.setattr(index_module, "analyze_module", fail)
    warm = build_index(root)
    assert warm.definitions == cold.definitions and warm.components == cold.components
    assert warm.statements == cold.statements
    # Once the recorded stats are old enough to trust, unchanged files are not even read.
    monkeypatch.setattr(index_module, "_RACY_MARGIN_NS", -(10**12))
    build_index(root)  # records stats trusted from now on
    monkeypatch.setattr(index_module, "open", fail, raising=False)
    assert build_index(root).statements == cold.statements


def test_changed_file_is_reparsed_and_corrupt_cache_is_a_miss(tmp_path):
    root = tmp_path / "cat"
    shutil.copytree(FIXTURES / "basic", root)
    build_index(root)
    util = root / "components" / "util.py"
    util.write_text(util.read_text() + "\n\nNEW_CONSTANT = 3\n")
    assert ("components.util", "NEW_CONSTANT") in build_index(root).definitions
    for snapshot in (root / ".sigmae-cache").glob("index-*.pkl"):
        snapshot.write_bytes(b"\x80\x05garbage")
    assert ("components.util", "NEW_CONSTANT") in build_index(root).definitions


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("from .util import x\n", r"components/bad\.py:1: relative import"),
        ("from components.util import *\n", r"components/bad\.py:1: .*import \*"),
        ("print('hi')\n", r"components/bad\.py:1: unsupported module-level statement \(Expr\)"),
        ("import os\nos.environ['X'] = '1'\n", r"components/bad\.py:2: module-level assignment .* side effect"),
        ("x = 1; y = 2\n", r"components/bad\.py:1: several statements on one line"),
        ("def f(:\n", r"components/bad\.py:1: syntax error"),
        ("A = 1\nA = 2\n", r"components/bad\.py:2: 'A' is bound again \(first at line 1\)"),
        (
            "from components.registry import model_registry\nNAME = 'x'\n@model_registry.register(NAME)\nclass M: ...\n",
            r"components/bad\.py:3: the registry decorator's name must be a string literal",
        ),
        (
            "def f():\n    import components.util as u\n    return u\n",
            r"components/bad\.py:2: the inliner follows `from components.<module> import <Name>` inside functions",
        ),
    ],
)
def test_unsupported_catalog_constructs_name_file_line_and_fix(tmp_path, source, message):
    root = write_catalog(tmp_path, {"components/bad.py": source})
    with pytest.raises(CatalogError, match=message):
        build_index(root)


def test_duplicate_registration_is_reported_with_both_places(tmp_path):
    deco = "from components.registry import model_registry\n@model_registry.register('same')\nclass {}: ...\n"
    root = write_catalog(tmp_path, {"components/a.py": deco.format("A"), "components/b.py": deco.format("B")})
    with pytest.raises(
        CatalogError, match=r"components/b\.py:2: model 'same' is already registered by A \(components/a\.py:3\)"
    ):
        build_index(root)


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="not a catalog package"):
        build_index(tmp_path)


def test_real_catalog_indexes_without_importing_it_or_torch(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    probe = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from generator.index import build_index;"
        "index = build_index(Path(sys.argv[1]), cache_dir=Path(sys.argv[2]));"
        "assert index.components and index.modules;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'components', 'numpy'));"
        "print(bad)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(repo), str(tmp_path / "cache")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_same_size_edit_with_restored_mtime_is_still_seen(tmp_path, monkeypatch):
    # Trust recorded stats at once (normally only after 2 s), so the stat check itself is tested.
    monkeypatch.setattr(index_module, "_RACY_MARGIN_NS", -(10**9))
    root = tmp_path / "cat"
    shutil.copytree(FIXTURES / "basic", root)
    util = root / "components" / "util.py"
    before = util.stat()
    build_index(root)
    time.sleep(0.05)  # past the kernel's timestamp tick
    # Same length, same mtime: only the content (and the inode's ctime) changed.
    util.write_text(util.read_text().replace("SCALE = 2.0", "SCALE = 3.0"))
    os.utime(util, ns=(before.st_atime_ns, before.st_mtime_ns))
    code = build_index(root).statements[("components.util", "SCALE")].code
    assert code == "SCALE = 3.0\n"


def test_iteration_order_does_not_depend_on_what_was_looked_up_first(tmp_path):
    first = build_index(FIXTURES / "basic", cache_dir=tmp_path / "cache")
    expected = list(first.definitions)
    second = build_index(FIXTURES / "basic", cache_dir=tmp_path / "cache")
    second.statements[("components.models", "Net")]  # loads one late module first
    assert list(second.definitions) == expected
    assert list(second.analyses) == list(second.modules)
    assert ("components.models", "Net") in second.definitions
    assert ("components.models", "Nope") not in second.definitions
    assert second.definitions.get(("components.nope", "X")) is None


def test_definitions_in_one_module_in_source_order(basic):
    names = [(d.name, d.kind) for d in basic.definitions_in("components.util")]
    assert names == [
        ("json", "import"),
        ("math", "import"),
        ("OrderedDict", "import"),
        ("SCALE", "constant"),
        ("UNUSED_CONSTANT", "constant"),
        ("helper", "function"),
        ("unused_helper", "function"),
        ("scale", "function"),
    ]
    assert basic.definitions_in("components.nope") == []
