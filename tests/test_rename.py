"""Renaming one definition on the index's scope analysis (generator/rename.py): only what means
the module-level name changes, everything else stays as written."""

from __future__ import annotations

import textwrap

import pytest

from generator.analysis import CatalogError
from generator.rename import rewrite_names


def rename(code: str, **names: str) -> str:
    return rewrite_names(textwrap.dedent(code), names=names, attrs={}, local_imports={}, where="components/x.py:1")


def test_references_to_the_global_change_and_locals_of_that_name_do_not() -> None:
    code = """\
    def helper(x: Scale = Scale(2), *, scale: int = 1) -> Scale:
        def inner(Scale):
            return Scale
        values = [Scale for Scale in range(3)]
        y: Scale = Scale(x)
        return y.Scale, dict(Scale=scale), inner, values, lambda Scale: Scale
    """
    assert rename(code, Scale="Scale_2") == textwrap.dedent("""\
    def helper(x: Scale_2 = Scale_2(2), *, scale: int = 1) -> Scale_2:
        def inner(Scale):
            return Scale
        values = [Scale for Scale in range(3)]
        y: Scale_2 = Scale_2(x)
        return y.Scale, dict(Scale=scale), inner, values, lambda Scale: Scale
    """)


def test_the_definition_itself_its_global_writes_and_class_bodies() -> None:
    code = """\
    @register
    class Counter(Base):
        count = Counter_default

        def count_up(self):
            global total
            total = total + 1
            return Counter, self.count

        def Counter(self):
            return 0
    """
    out = rename(code, Counter="Counter_a", total="total_b", register="register_c")
    assert out == textwrap.dedent("""\
    @register_c
    class Counter_a(Base):
        count = Counter_default

        def count_up(self):
            global total_b
            total_b = total_b + 1
            return Counter_a, self.count

        def Counter(self):
            return 0
    """)


def test_columns_are_characters_after_non_ascii_text() -> None:
    assert rename('def f():\n    return "é" + label + "ü", label\n', label="label_2") == 'def f():\n    return "é" + label_2 + "ü", label_2\n'


def test_names_inside_string_annotations_are_left_as_written() -> None:
    assert rename('def f(x: "Block") -> Block:\n    return x\n', Block="Block_2") == 'def f(x: "Block") -> Block_2:\n    return x\n'


def test_module_attributes_and_function_local_catalog_imports() -> None:
    code = textwrap.dedent("""\
    def f():
        from components.consts import NAMES as N
        return N, layers.Attention

    def g():
        from components.consts import NAMES
    """)
    out = rewrite_names(code, names={}, attrs={("layers", "Attention"): "Attention_layers"}, local_imports={"N": "NAMES", "NAMES": "NAMES"}, where="x.py:1")
    assert out == "def f():\n    N = NAMES\n    return N, Attention_layers\n\ndef g():\n    pass\n"


def test_a_local_that_would_hide_the_new_name_is_an_error() -> None:
    with pytest.raises(CatalogError, match="a local variable of that name hides it"):
        rename("def f():\n    Block_2 = 1\n    return Block, Block_2\n", Block="Block_2")


def test_attribute_reads_of_a_renamed_name_rename_the_name() -> None:
    code = """\
    def build(v):
        made = Foo.make()
        match v:
            case Foo.X:
                return Foo.X.Y
        return made, Foo().x, v.Foo
    """
    assert rename(code, Foo="Foo_2") == textwrap.dedent("""\
    def build(v):
        made = Foo_2.make()
        match v:
            case Foo_2.X:
                return Foo_2.X.Y
        return made, Foo_2().x, v.Foo
    """)
