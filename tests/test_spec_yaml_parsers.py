"""libyaml parses plain spec text fast; what a spec means, and what a bad one is told, never
depends on whether PyYAML was built with it (generator/spec.py `_parsed_events`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import generator.spec as spec_module
from generator.errors import SpecError
from generator.spec import parse_yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC_FILES = sorted([*ROOT.glob("specs/*.yaml"), *ROOT.glob("tests/bad_specs/*.yaml"), *ROOT.glob("tests/fixture_specs/*.yaml")])


def outcome(text: str) -> tuple[str, str]:
    try:
        return "parsed", repr(parse_yaml(text, "spec.yaml"))
    except SpecError as exc:
        return "refused", str(exc)


def pure_outcome(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    with monkeypatch.context() as patch:
        patch.setattr(spec_module, "_FAST_LOADER", None)
        return outcome(text)


@pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False), reason="PyYAML without libyaml: only one parser here")
def test_shipped_specs_take_the_fast_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    loaders: list[type] = []
    real = yaml.parse

    def recording(text, Loader):  # noqa: N803 - yaml's own keyword
        loaders.append(Loader)
        return real(text, Loader=Loader)

    monkeypatch.setattr(spec_module.yaml, "parse", recording)
    outcome((ROOT / "specs" / "esc50_audiomae.yaml").read_text(encoding="utf-8"))
    assert loaders == [yaml.CSafeLoader]


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.name)
def test_every_spec_file_parses_alike_with_either_parser(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = path.read_text(encoding="utf-8")
    assert outcome(text) == pure_outcome(text, monkeypatch)


# Texts libyaml and the pure-Python parser disagree on (tabs, a BOM inside, escapes, a version
# directive, end of stream inside a flow, nesting past libyaml's own limit of 1000), and a lone
# surrogate from a non-UTF-8 `--set` argument, which libyaml cannot even encode.
EDGE_CASES = [
    "a:\t1\n",
    "a: b\t\n",
    "a: 1\t# c\n",
    "[\n\t1]\n",
    "a: 1\n\ufeffb: 2\n",
    'a: "\\q"\n',
    "%YAML 1.3\n---\na: 1\n",
    "width=[1",
    "k: " + "[" * 1200 + "]" * 1200 + "\n",
    "name: \udcff\n",
    "a: \x85b\n",
    "a: @x\n",
    "a: `x`\n",
    "a:\n  - 1\n - 2\n",
    # found by differential fuzzing of plain ASCII text (a review of this change)
    "a: {url: http://x?y=1}\n",
    "a: [x ?y]\n",
    "a: {k ?v}\n",
    "notes: |# text\n  hello\n",
    "a: >-# c\n  b\n",
    "a: |1#\n  b\n",
    "a: [!!str,b]\n",
    "a: !\n",
    "!=:!\n",
    "[!a,b]\n",
    "---",
    'a: "\\/x"\n',
    'a: "\\x41\\u00e9"\n',
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_texts_the_parsers_disagree_on_get_the_pure_parsers_answer(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert outcome(text) == pure_outcome(text, monkeypatch)


@given(st.text(alphabet="ab1: -[]{},'\"\n\t#&*!|>%@`\\.\ufeff\x85é", max_size=40) | st.text(alphabet="ab1: -[]{},'\"\n#&*|>%?=/.", max_size=40))
def test_any_text_parses_alike_with_either_parser(text: str) -> None:
    """Any text, and plain ASCII text (which mostly takes the fast parser)."""
    fast = outcome(text)
    saved = spec_module._FAST_LOADER
    spec_module._FAST_LOADER = None
    try:
        assert fast == outcome(text)
    finally:
        spec_module._FAST_LOADER = saved
