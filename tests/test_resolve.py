"""Definition-level reachability: what is in, what is out, in which order, and why."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.index import CatalogError, build_index
from generator.resolve import dependencies, explain, resolve

FIXTURES = Path(__file__).parent / "fixture_catalogs"


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    return build_index(FIXTURES / "basic", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def cycles(tmp_path_factory):
    return build_index(FIXTURES / "cycles", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def demo(basic):
    return resolve(basic, [basic.component("recipe", "demo").key])


def catalog(root: Path, files: dict[str, str]):
    (root / "components").mkdir(parents=True)
    (root / "components" / "__init__.py").write_text("")
    for name, text in files.items():
        (root / "components" / name).write_text(textwrap.dedent(text))
    return build_index(root, cache_dir=root / "cache")


def test_reaches_transitively_across_modules(demo):
    emitted = set(demo.order)
    assert {
        ("components.models", "demo"),
        ("components.models", "Net"),
        ("components.layers.blocks", "Block"),  # through the re-export in components/layers/__init__.py
        ("components.base", "Base"),
        ("components.util", "helper"),  # through `import components.util as u` + `u.helper`
    } <= emitted
    assert len({module for module, _ in demo.order}) == 4


def test_leaves_unreferenced_definitions_out_and_counts_them(demo):
    left_out = {
        ("components.models", "unrelated"),
        ("components.models", "TinyNet"),
        ("components.layers.blocks", "untouched"),
        ("components.layers.blocks", "UNUSED_WIDTH"),
        ("components.base", "NeverUsed"),
        ("components.util", "unused_helper"),
        ("components.util", "UNUSED_CONSTANT"),
    }
    assert not left_out & set(demo.order)
    assert demo.excluded == len(left_out)
    assert not any(module == "components.registry" for module, _ in demo.order), "registry decorators pull nothing in"


def test_follows_bases_decorators_defaults_and_annotations(demo):
    def reason(name: str) -> tuple[str, str]:
        found = demo.reasons[("components.base" if name in {"Base", "Shape"} else "components.layers.blocks", name)]
        return found.needed_by[1], found.location

    assert reason("Base") == ("Block", "components/layers/blocks.py:31")  # base class
    assert demo.reasons[("components.layers.blocks", "WIDTH")].context == "Block.__init__"
    assert reason("tagged") == ("Block", "components/layers/blocks.py:38")  # method decorator
    assert reason("WIDTH") == ("Block", "components/layers/blocks.py:34")  # default value
    assert reason("Shape") == ("Block", "components/layers/blocks.py:43")  # return annotation


def test_follows_aliases_to_the_defining_module(demo):
    # `from components.util import SCALE as FACTOR` reaches util's SCALE, not a copy.
    assert ("components.util", "SCALE") in demo.order
    assert ("components.layers.blocks", "FACTOR") not in demo.order
    assert ("components.util", "scale") in demo.order  # imported `as util_scale`


def test_order_executes_dependencies_first_grouped_by_module(demo, basic):
    position = {key: i for i, key in enumerate(demo.order)}
    for key in demo.order:
        for dep in dependencies(basic, basic.statements[key]):
            if dep.eager and dep.target_key in position:
                assert position[dep.target_key] < position[key], f"{dep.target_key} must precede {key}"
    modules = [module for module, _ in demo.order]
    assert [m for i, m in enumerate(modules) if i == 0 or modules[i - 1] != m] == list(dict.fromkeys(modules))
    # Inside a module, source order is kept.
    blocks = [name for module, name in demo.order if module == "components.layers.blocks"]
    assert blocks == ["WIDTH", "tagged", "Block"]


def test_cycles_across_modules_terminate_and_reach_everything(cycles):
    resolution = resolve(cycles, [cycles.component("recipe", "parity").key])
    assert {name for _, name in resolution.order} == {"is_even", "is_odd", "Even", "Odd", "countdown", "parity"}
    assert len(resolution.order) == len(set(resolution.order))


def test_import_time_cycles_are_a_clear_error(tmp_path):
    index = catalog(
        tmp_path,
        {
            "a.py": "from components.b import B\nclass A(B): ...\nclass C: ...\n",
            "b.py": "from components.a import C\nclass B(C): ...\n",
        },
    )
    with pytest.raises(CatalogError, match=r"components/b\.py -> components/a\.py need each other at import time"):
        resolve(index, [("components.a", "A")])


def test_same_input_gives_the_same_resolution(basic, demo):
    again = resolve(basic, [basic.component("recipe", "demo").key])
    assert again == demo and list(again.reasons.items()) == list(demo.reasons.items())


def test_explain_prints_reason_chains_and_what_was_left_out(basic, demo):
    text = explain(basic, demo)
    assert "components/layers/blocks.py\n" in text
    # Each link names the function or method holding the reference, and where it is.
    assert "  Block ← Net.__init__ (components/models.py:19) ← demo (components/models.py:35) ← recipe 'demo'" in text
    assert "  Base ← Block (components/layers/blocks.py:31) ← Net.__init__" in text  # a base class
    assert "  Shape ← Block.shape (components/layers/blocks.py:43)" in text
    assert "7 definitions of those modules left out" in text
    assert text.index("components/base.py") < text.index("components/models.py")


def test_external_imports_are_only_those_the_reached_code_uses(demo):
    assert "import math" in demo.external_imports
    assert "import json" not in demo.external_imports  # only unused_helper needs it
    assert not any("collections" in line for line in demo.external_imports)


def test_provided_definitions_are_not_followed(basic):
    resolution = resolve(basic, [("components.models", "demo")], provided=[("components.models", "Net")])
    assert resolution.provided == (("components.models", "Net"),)
    assert resolution.order == (("components.models", "demo"),)


@pytest.mark.parametrize(
    ("files", "root", "message"),
    [
        ({"a.py": "X = 1\n"}, ("components.a", "Y"), r"root components\.a\.Y: components/a\.py defines no 'Y'"),
        ({"a.py": "X = 1\n"}, ("components.zz", "X"), r"no catalog module 'components\.zz'"),
        (
            {"u.py": "X = 1\n", "a.py": "import components.u as u\ndef f():\n    return u\n"},
            ("components.a", "f"),
            r"components/a\.py:3: the catalog module components\.u is used as a value",
        ),
        (
            {"u.py": "X = 1\n", "a.py": "import components.u as u\ndef f():\n    return u.Y\n"},
            ("components.a", "f"),
            r"components/a\.py:3: `u\.Y`: components/u\.py defines no 'Y'",
        ),
        (
            {"u.py": "X = 1\n", "a.py": "from components.u import Y\ndef f():\n    return Y\n"},
            ("components.a", "f"),
            r"components/a\.py:1: `from components\.u import Y`: components/u\.py defines no 'Y'",
        ),
        (
            {"a.py": "def f():\n    return not_defined_anywhere\n"},
            ("components.a", "f"),
            r"components/a\.py:2: name 'not_defined_anywhere' is not defined",
        ),
    ],
)
def test_broken_references_name_file_and_line(tmp_path, files, root, message):
    index = catalog(tmp_path, files)
    with pytest.raises(CatalogError, match=message):
        resolve(index, [root])


ROOTS = [
    ("components.models", "demo"),
    ("components.models", "Net"),
    ("components.models", "TinyNet"),
    ("components.layers.blocks", "untouched"),
    ("components.util", "unused_helper"),
    ("components.base", "NeverUsed"),
    ("components.layers", "Block"),
]


@given(st.lists(st.sampled_from(ROOTS), min_size=1, max_size=4, unique=True))
@settings(deadline=None)
def test_any_roots_give_a_closed_executable_order(basic, roots):
    resolution = resolve(basic, roots)
    position = {key: i for i, key in enumerate(resolution.order)}
    for key in resolution.order:
        for dep in dependencies(basic, basic.statements[key]):
            if dep.target_key is not None:
                assert dep.target_key in position, f"{key} needs {dep.target_key}, which was left out"
                if dep.eager:
                    assert position[dep.target_key] < position[key]
    assert resolution == resolve(basic, roots)


def test_submodules_imported_by_name_are_followed(tmp_path):
    (tmp_path / "components" / "pkg").mkdir(parents=True)
    (tmp_path / "components" / "__init__.py").write_text("")
    (tmp_path / "components" / "pkg" / "__init__.py").write_text("from components.pkg.leaf import Leaf as Leaf\n")
    (tmp_path / "components" / "pkg" / "leaf.py").write_text("class Leaf:\n    pass\n\n\nclass Other:\n    pass\n")
    (tmp_path / "components" / "user.py").write_text(
        "from components.pkg import leaf\nfrom components import pkg as package\n\n"
        "def make():\n    return leaf.Leaf(), package.Leaf()\n"
    )
    index = build_index(tmp_path, cache_dir=tmp_path / "cache")
    resolution = resolve(index, [("components.user", "make")])
    assert resolution.order == (("components.pkg.leaf", "Leaf"), ("components.user", "make"))
    assert resolution.excluded == 1
