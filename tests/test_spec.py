"""Spec loading: typing against signatures, extends, --set overrides, and a fuzz of documents."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from generator.errors import SpecError
from generator.index import build_index
from generator.spec import _Mismatch, conform, load_spec, section_class_name

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"

BASE = {
    "name": "toy",
    "data": {"use": "toy"},
    "transform": {"use": "scale"},
    "model": {"use": "tiny"},
    "recipe": [{"use": "fit", "name": "pretrain"}],
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    return build_index(CATALOG, cache_dir=tmp_path_factory.mktemp("cache"))


def write(folder: Path, name: str, document: Any) -> Path:
    path = folder / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


def with_model(**params: Any) -> dict[str, Any]:
    return {**BASE, "model": {"use": "tiny", "with": params}}


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        ("int", 3, 3),
        ("float", 3, 3.0),
        ("float", "1e-4", 1e-4),
        ("float | None", None, None),
        ("Optional[int]", 4, 4),
        ("tuple[int, int]", [1, 2], (1, 2)),
        ("tuple[float, ...]", [1, 2.5], (1.0, 2.5)),
        ("list[str]", ["a"], ["a"]),
        ("list[int] | None", [1, 2], [1, 2]),
        ("Literal['a', 'b']", "b", "b"),
        ("str", "x", "x"),
        ("bool", False, False),
        ("int | float", 2, 2),
    ],
)
def test_values_are_converted_to_their_annotation(annotation: str, value: Any, expected: Any) -> None:
    got = conform(value, annotation)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("annotation", "value"),
    [("int", True), ("int", 1.5), ("float", "fast"), ("bool", 1), ("str", 3), ("tuple[int, int]", [1]), ("Literal[1, 2]", True), ("list[int]", [1, "a"]), ("int | None", "x")],
)
def test_values_that_do_not_fit_are_rejected(annotation: str, value: Any) -> None:
    with pytest.raises(_Mismatch):
        conform(value, annotation)


def test_toy_spec_loads_with_typed_values_and_defaults(index) -> None:
    spec = load_spec(TOY, index)
    assert spec.name == "toy" and spec.outputs == ("script", "notebook", "tests")
    assert spec.model.values["kernel"] == (5, 7)  # YAML list -> tuple by annotation
    assert spec.model.values["scale"] == 0.1  # `1e-1` is a string to YAML, a float to a float parameter
    assert spec.model.values["limit"] == math.inf  # signature default float("inf")
    assert spec.model.from_spec == {"width", "kernel", "tags", "scale"}
    assert [s.section for s in spec.steps] == ["pretrain", "evaluate"]
    assert spec.smoke_data is not None and spec.smoke_data.component.name == "synthetic_toy"
    assert spec.smoke == {"data": {"num_items": 6}, "transform": {"target_frames": 3}, "pretrain": {"epochs": 1}}


def test_extends_merges_sections_and_a_new_use_replaces_the_block(tmp_path: Path, index) -> None:
    write(tmp_path, "base.yaml", {**BASE, "description": "base", "model": {"use": "tiny", "with": {"width": 5, "scale": 2.0}}})
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "name": "child", "model": {"with": {"width": 9}}})
    spec = load_spec(child, index)
    assert (spec.name, spec.description) == ("child", "base")
    assert spec.model.values["width"] == 9 and spec.model.values["scale"] == 2.0
    assert [f.display for f in spec.files] == ["child.yaml", "base.yaml"]

    other = write(tmp_path, "other.yaml", {"extends": "base.yaml", "model": {"use": "deep", "with": {"depth": 3}}})
    assert load_spec(other, index).model.values == {"depth": 3, "width": 4}

    sub = tmp_path / "sub"
    sub.mkdir()
    grandchild = write(sub, "grandchild.yaml", {"extends": "../child.yaml", "model": {"with": {"scale": 3.0}}})
    spec = load_spec(grandchild, index)
    assert (spec.name, spec.model.values["width"], spec.model.values["scale"]) == ("child", 9, 3.0)
    assert [f.display for f in spec.files] == ["grandchild.yaml", "../child.yaml", "../base.yaml"]


def test_set_overrides_are_typed_by_yaml_and_address_steps_by_name_or_index(tmp_path: Path, index) -> None:
    path = write(tmp_path, "spec.yaml", BASE)
    spec = load_spec(path, index, ["model.with.width=7", "recipe.pretrain.with.lr=.5", "recipe.0.with.epochs=4", "model.with.kernel=[2, 3]", "model.with.label=it's"])
    assert spec.model.values["width"] == 7 and spec.model.values["kernel"] == (2, 3) and spec.model.values["label"] == "it's"
    assert spec.steps[0].values["lr"] == 0.5 and spec.steps[0].values["epochs"] == 4
    assert spec.overrides[0] == "model.with.width=7"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.with.width", "--set needs KEY=VALUE"),
        ("=3", "is empty"),
        ("model..width=3", "empty part"),
        ("name.x=1", "which has no keys"),
        ("recipe.trian.with.epochs=1", "Did you mean 'pretrain'?"),
        ("recipe.5.with.epochs=1", "out of range"),
        ("model.with.width=[1", "YAML syntax error"),
        ("model.with.width=x", "must be an integer"),
        ("model.with.widht=3", "Did you mean 'width'?"),
        ("name={a: 1}", "got mapping {'a': 1};"),
        ("recipe.pretrain.name=[1]", "got list [1];"),
        ("smoke.data={use: synthetic_toy, with: {nope: 1}}", "for data 'synthetic_toy' in smoke.data.with."),
        ("smoke.data={use: synthetic_toy, wiht: {}}", "unknown key 'wiht' in smoke.data."),
    ],
)
def test_bad_set_overrides_name_the_argument(tmp_path: Path, index, override: str, message: str) -> None:
    path = write(tmp_path, "spec.yaml", BASE)
    with pytest.raises(SpecError) as caught:
        load_spec(path, index, [override])
    assert message in str(caught.value)
    if "Did you mean 'width'" not in message and "must be" not in message:
        assert str(caught.value).startswith(f"<--set {override}>:1:")


def test_float_specials_and_nested_lists_keep_their_values(tmp_path: Path, index) -> None:
    # An infinity where the default is one; NaN (or inf where the default is finite) is refused,
    # tests/test_data_safety_limits.py (issue 11, item 12).
    spec = load_spec(write(tmp_path, "s.yaml", "name: s\ndata: {use: toy}\ntransform: {use: scale}\nmodel: {use: tiny, with: {limit: -.inf}}\nrecipe: [{use: fit}]\n"), index)
    assert spec.model.values["limit"] == -math.inf


def test_section_class_names() -> None:
    assert section_class_name("pretrain") == "PretrainConfig"
    assert section_class_name("k_fold") == "KFoldConfig"


def test_missing_spec_file_is_a_spec_error(tmp_path: Path, index) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml", index)


# --------------------------------------------------------------------------- fuzz

KEYS = st.sampled_from(["name", "data", "model", "transform", "recipe", "smoke", "outputs", "extends", "use", "with", "width", "kernel", "mode", "epochs", "description", "x"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["tiny", "toy", "scale", "fit", "deep", "script", "pdf", "toy.yaml", "mean"]),
)
VALUES = st.recursive(SCALARS, lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=5)), max_leaves=20)


def mutated_documents() -> st.SearchStrategy[dict[str, Any]]:
    """Valid-looking documents with random sections replaced, removed or added."""
    return st.builds(
        lambda drop, extra: {**{k: v for k, v in BASE.items() if k not in drop}, **extra},
        st.sets(st.sampled_from(sorted(BASE))),
        st.dictionaries(KEYS, VALUES, max_size=4),
    )


@settings(deadline=None)
@given(document=st.one_of(VALUES, mutated_documents()))
def test_fuzzed_documents_raise_only_spec_errors(tmp_path_factory: pytest.TempPathFactory, index, document: Any) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = write(folder, "spec.yaml", yaml.safe_dump(document))
    try:
        load_spec(path, index)
    except SpecError as error:
        assert error.file and str(error).startswith(error.location) and "\n" not in str(error)


@settings(deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("abc:{}[]-,'\"!&*#|>\n .0123\t%@`")), max_size=80))
def test_fuzzed_yaml_text_raises_only_spec_errors(tmp_path_factory: pytest.TempPathFactory, index, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(text)
    try:
        load_spec(path, index)
    except SpecError as error:
        assert error.file and "\n" not in str(error)


OVERRIDE_TEXT = st.text(alphabet=st.sampled_from(list("model.with.width=recipe0pretain[]{}:,'\"- 12\n#!&*")), max_size=40)


@settings(deadline=None)
@given(overrides=st.lists(OVERRIDE_TEXT, max_size=3))
def test_fuzzed_set_overrides_raise_only_spec_errors(tmp_path_factory: pytest.TempPathFactory, index, overrides: list[str]) -> None:
    path = write(tmp_path_factory.mktemp("fuzz"), "spec.yaml", BASE)
    try:
        load_spec(path, index, overrides)
    except SpecError as error:
        assert error.file and "\n" not in str(error)
