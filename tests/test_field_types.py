"""One source for the type rules: what the spec check accepts, the emitted flags accept.

The spec check (generator/spec.py `conform`, on annotation text, without torch) and the
command line of the emitted script (components/flags.py `FlagSpec.convert`, on the
dataclass field) both apply components/field_types.py. For every annotation form the
catalog's schema uses (read from the index), a value the spec accepts reads back from its
command-line spelling as the same value, and whatever a flag reads is a value the spec
accepts.
"""

from __future__ import annotations

import argparse
import ast
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, strategies as st

from components import field_types
from components.flags import FlagSpec, flag_specs
from generator.index import build_index
from generator.spec import FIELD_TYPES, _Mismatch, conform as spec_conform

ROOT = Path(__file__).resolve().parent.parent


def schema_annotations() -> list[str]:
    """Every annotation of a spec-settable parameter (components and the run options)."""
    index = build_index(ROOT)
    params = [p for c in index.components.values() if c.kind != "fixture" for p in c.params]
    params += index.statements[("components.runtime", "RunOptions")].params
    found = {ast.unparse(ast.parse(p.annotation.strip(), mode="eval")) for p in params if p.annotation}
    return sorted(found)


FORMS = schema_annotations()


def flag_for(annotation: str) -> FlagSpec:
    """The flag the emitted script makes of a section field annotated `annotation`."""
    source = f"from __future__ import annotations\nfrom dataclasses import dataclass, field\n\n@dataclass\nclass Section:\n    x: {annotation} = None\n\n@dataclass\nclass Config:\n    section: Section = field(default_factory=Section)\n"
    namespace: dict[str, Any] = {"__name__": __name__}
    exec(compile(source, "<config>", "exec"), namespace)  # a Config as the skeleton renders it
    (spec,) = flag_specs(namespace["Config"])
    return spec


def tokens_of(value: Any) -> list[str]:
    """How a user writes `value` on the command line (YAML null is `none`)."""
    if isinstance(value, (list, tuple)):
        return [token for item in value for token in tokens_of(item)]
    if value is None:
        return ["none"]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    return [repr(value) if isinstance(value, float) else str(value)]


def spellable(value: Any, rule: Any, *, in_sequence: bool = False) -> bool:
    """Whether the command line can say `value` at all: a flag takes at least one token, a
    token is split at commas inside a sequence, and `none` means null in an optional field."""
    if isinstance(value, (list, tuple)):
        return bool(value) and not in_sequence and all(spellable(item, rule, in_sequence=True) for item in value)
    if isinstance(value, str):
        optional = rule.without_none()[1]
        return value != "" and not (in_sequence and "," in value) and not (optional and value.strip().lower() in field_types.NONE_WORDS)
    return not (isinstance(value, float) and math.isnan(value))


def values_of(rule: Any) -> st.SearchStrategy[Any]:
    """Values of the type `rule` reads (lists where a spec writes YAML lists)."""
    kind = rule.kind
    scalars = {"int": st.integers(-(10**6), 10**6), "float": st.floats(allow_nan=False, width=32) | st.integers(-100, 100), "bool": st.booleans(), "str": st.text(min_size=1, max_size=8), "none": st.none()}
    if kind in scalars:
        return scalars[kind]
    if kind == "literal":
        return st.sampled_from(rule.choices)
    if kind == "union":
        return st.one_of(*map(values_of, rule.args))
    if kind == "tuple" and not rule.variadic:
        return st.tuples(*map(values_of, rule.args)).map(list)
    if kind in ("tuple", "list", "sequence"):
        return st.lists(values_of(rule.args[0]), min_size=1, max_size=4)
    return st.nothing()


NEAR_MISSES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.sampled_from(["x", "mean", "tiny", "1e-4", "3", "none", "true", "7,8"]),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=4,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def flag_reads(spec: FlagSpec, tokens: list[str]) -> tuple[bool, Any]:
    try:
        return True, spec.convert(tokens)
    except argparse.ArgumentTypeError:
        return False, None


def spec_reads(value: Any, annotation: str) -> tuple[bool, Any]:
    try:
        return True, spec_conform(value, annotation)
    except _Mismatch:
        return False, None


def check_agreement(annotation: str, value: Any) -> None:
    spec = flag_for(annotation)
    accepted, typed = spec_reads(value, annotation)
    if accepted and spellable(value, spec.rule):
        read, from_flag = flag_reads(spec, tokens_of(value))
        assert read, f"{annotation}: the spec accepts {value!r}, the flag refuses {tokens_of(value)}"
        assert same(from_flag, typed), f"{annotation}: spec {typed!r}, flag {from_flag!r}"
    read, from_flag = flag_reads(spec, tokens_of(value))
    if read:
        accepted, typed = spec_reads(from_flag, annotation)
        assert accepted and same(typed, from_flag), f"{annotation}: --x {' '.join(tokens_of(value))} gave {from_flag!r}, which the spec refuses"
        # A typed scalar the spec refuses must not read from its spelling either; a command
        # line has neither quotes nor brackets, so text, lists, text fields and list fields
        # (where `1` is how one writes [1]) are exempt.
        typed_scalar = isinstance(value, (bool, int, float, type(None)))
        if typed_scalar and not reads_text(spec.rule) and not spec.takes_sequence:
            assert spec_reads(value, annotation)[0], f"{annotation}: the spec refuses {value!r}, the flag reads {tokens_of(value)} as {from_flag!r}"


def reads_text(rule: Any) -> bool:
    return rule.kind == "str" or any(map(reads_text, rule.args))


def test_the_catalog_uses_the_forms_this_test_covers() -> None:
    kinds = {FIELD_TYPES.field_type(form).without_none()[0].kind for form in FORMS}
    assert {"int", "float", "bool", "str", "literal", "tuple", "list"} <= kinds and len(FORMS) >= 10


@pytest.mark.parametrize("annotation", FORMS)
@given(data=st.data())
def test_a_value_of_the_type_reads_the_same_from_the_spec_and_the_command_line(annotation: str, data: st.DataObject) -> None:
    check_agreement(annotation, data.draw(values_of(FIELD_TYPES.field_type(annotation))))


@pytest.mark.parametrize("annotation", FORMS)
@given(value=NEAR_MISSES)
@example(value=1)  # YAML reads `1` as a number: a bool field refuses it in both places
@example(value=3.0)
def test_any_value_is_accepted_by_both_or_by_neither(annotation: str, value: Any) -> None:
    check_agreement(annotation, value)


def test_the_generator_loads_the_rules_file_the_catalog_imports() -> None:
    assert Path(FIELD_TYPES.__file__).resolve() == Path(field_types.__file__).resolve()
    tree = ast.parse(Path(field_types.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    top_level = {name.split(".")[0] for name in imported}
    assert "torch" not in top_level and top_level <= set(__import__("sys").stdlib_module_names)


@pytest.mark.parametrize(
    ("annotation", "tokens", "expected"),
    [("tuple[int, int]", ["64,128"], (64, 128)), ("list[int] | None", ["NONE"], None), ("float", ["1e-4"], 1e-4), ("bool | None", ["yes"], True), ("Literal['mean', 'cls']", ["cls"], "cls")],
)
def test_flags_read_the_spellings_users_type(annotation: str, tokens: list[str], expected: Any) -> None:
    assert same(flag_for(annotation).convert(tokens), expected)
