"""`extends:` and recipe steps (components/README.md §4): a child's `recipe:` list replaces the
base's whole list, a `recipe:` mapping edits the base's steps by name (`null` removes one), and
either way the base's `smoke:` entries for steps that are gone are dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.cli import main
from generator.errors import SpecError
from generator.index import build_index
from generator.spec import load_spec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CATALOG = HERE / "fixture_specs" / "catalog"

BASE = {
    "name": "toy",
    "data": {"use": "toy"},
    "transform": {"use": "scale"},
    "model": {"use": "tiny"},
    "recipe": [{"use": "fit", "name": "pretrain", "with": {"epochs": 3, "lr": 0.5}}, {"use": "evaluate", "with": {"split": "val"}}],
    "smoke": {"transform": {"target_frames": 3}, "pretrain": {"epochs": 1}, "evaluate": {"split": "test"}},
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    return build_index(CATALOG, cache_dir=tmp_path_factory.mktemp("cache"))


def write(folder: Path, name: str, document: Any) -> Path:
    path = folder / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


def child(tmp_path: Path, text: str) -> Path:
    write(tmp_path, "base.yaml", BASE)
    return write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\n" + text)


def steps(spec) -> list[tuple[str, str]]:
    return [(choice.section, choice.component.name) for choice in spec.steps]


def test_a_child_recipe_list_replaces_the_whole_list_and_drops_the_smoke_of_gone_steps(tmp_path: Path, index) -> None:
    spec = load_spec(child(tmp_path, "recipe:\n  - {use: evaluate, name: report}\n"), index)
    assert steps(spec) == [("report", "evaluate")]
    assert spec.steps[0].values["split"] == "test"  # nothing of the base's steps leaks in
    assert spec.smoke == {"transform": {"target_frames": 3}}  # pretrain and evaluate entries dropped


def test_a_child_list_keeps_the_smoke_of_steps_it_still_has(tmp_path: Path, index) -> None:
    spec = load_spec(child(tmp_path, "recipe:\n  - {use: fit, name: pretrain}\n"), index)
    assert steps(spec) == [("pretrain", "fit")]
    assert spec.steps[0].values["epochs"] == 2  # the list replaced the base's step: its with: is gone
    assert spec.smoke == {"transform": {"target_frames": 3}, "pretrain": {"epochs": 1}}


def test_null_removes_a_step_by_name_and_a_mapping_changes_one(tmp_path: Path, index) -> None:
    spec = load_spec(child(tmp_path, "recipe:\n  evaluate: null\n  pretrain: {with: {epochs: 7}}\n"), index)
    assert steps(spec) == [("pretrain", "fit")]
    assert (spec.steps[0].values["epochs"], spec.steps[0].values["lr"]) == (7, 0.5)  # merged, base's lr kept
    assert spec.smoke == {"transform": {"target_frames": 3}, "pretrain": {"epochs": 1}}

    order = load_spec(child(tmp_path, "recipe:\n  pretrain: null\n"), index)
    assert steps(order) == [("evaluate", "evaluate")] and order.steps[0].values["split"] == "val"


def test_a_grandchild_edits_what_its_parent_left(tmp_path: Path, index) -> None:
    write(tmp_path, "base.yaml", BASE)
    write(tmp_path, "middle.yaml", "extends: base.yaml\nrecipe:\n  evaluate: {with: {split: train}}\n")
    last = write(tmp_path, "last.yaml", "extends: middle.yaml\nrecipe:\n  pretrain: null\n")
    spec = load_spec(last, index)
    assert steps(spec) == [("evaluate", "evaluate")] and spec.steps[0].values["split"] == "train"
    assert spec.smoke == {"transform": {"target_frames": 3}, "evaluate": {"split": "test"}}


def test_the_childs_own_smoke_entry_for_a_gone_step_is_still_an_error(tmp_path: Path, index) -> None:
    path = child(tmp_path, "recipe:\n  evaluate: null\nsmoke:\n  evaluate: {split: x}\n")
    with pytest.raises(SpecError, match="smoke: unknown section 'evaluate'") as caught:
        load_spec(path, index)
    assert (caught.value.file, caught.value.line) == ("child.yaml", 6)


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("recipe:\n  evalute: null\n", 4, 3, "recipe: cannot remove step 'evalute': the extends: base has no step of that name. Did you mean 'evaluate'?"),
        ("recipe:\n  probe: {with: {split: x}}\n", 4, 3, "recipe: cannot change step 'probe'"),
        ("recipe:\n  pretrain: null\n  evaluate: null\n", 3, 1, "recipe: removes every step of the extends: base"),
        ("recipe:\n  pretrain: 3\n", 4, 13, "recipe.pretrain must be null (remove the step) or a mapping"),
        ("recipe:\n  pretrain: {name: other}\n", 4, 20, "recipe.pretrain cannot rename the step (to 'other')"),
        ("evaluate: null\n", 3, 1, "'evaluate' is a recipe step: change it under recipe:"),
    ],
)
def test_bad_edits_are_one_located_error(tmp_path: Path, index, text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(child(tmp_path, text), index)
    assert (caught.value.file, caught.value.line, caught.value.column) == ("child.yaml", line, column), str(caught.value)
    assert message in str(caught.value)


def test_a_recipe_mapping_without_a_base_says_it_needs_extends(tmp_path: Path, index) -> None:
    path = write(tmp_path, "alone.yaml", {**BASE, "recipe": {"evaluate": None}})
    with pytest.raises(SpecError, match="only edits the steps of an extends: base"):
        load_spec(path, index)


# ---------------------------------------------------------------- the case, on the shipped spec
def test_the_shipped_esc50_spec_can_be_extended_with_its_own_recipe_or_without_kfold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = (ROOT / "specs" / "esc50_audiomae.yaml").read_text(encoding="utf-8")
    write(tmp_path, "esc50_audiomae.yaml", base)
    own = write(tmp_path, "probe.yaml", "extends: esc50_audiomae.yaml\nname: esc50_probe\nrecipe:\n  - {use: mae_pretrain, name: pretrain}\n  - {use: linear_probe, name: probe}\n")
    dropped = write(tmp_path, "no_kfold.yaml", "extends: esc50_audiomae.yaml\nname: esc50_pretrain\nrecipe:\n  kfold: null\n")
    missing = write(tmp_path, "bad.yaml", "extends: esc50_audiomae.yaml\nname: esc50_bad\nrecipe:\n  fold: null\n")
    assert main(["check", str(own), str(dropped)]) == 0
    out = capsys.readouterr().out
    assert "steps: pretrain=mae_pretrain, probe=linear_probe;" in out and "steps: pretrain=mae_pretrain;" in out
    assert main(["check", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bad.yaml:4:3: recipe: cannot remove step 'fold'"), err
    assert "Did you mean 'kfold'?" in err[0] and "Its steps: pretrain, kfold" in err[0]


@pytest.mark.parametrize("bad_name", ["{x: 1}", "[a, b]"])
def test_a_step_name_that_is_not_a_string_is_a_located_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_name: str
) -> None:
    base = (HERE / "fixture_specs" / "toy.yaml").read_text().replace("name: pretrain", f"name: {bad_name}")
    (tmp_path / "base.yaml").write_text(base + "foo: 1\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\n")
    for spec in ("base.yaml", "child.yaml"):
        code = main(["--catalog", str(CATALOG), "check", str(tmp_path / spec)])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and "base.yaml:" in err, err
