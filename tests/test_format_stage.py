"""The format stage: black runs on what the generator writes, never on catalog text it copies.

The catalog is black-clean (tests/test_catalog_style.py), so a definition emitted as its
source text (registry decorators dropped) is black-clean too; only the generated skeleton and
definitions libcst renamed in go to black, in the build's one format call.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import black
import pytest
from hypothesis import given, strategies as st

import generator.formatting as formatting
from generator.build import build_spec
from generator.index import build_index
from generator.inline import _drop_registry_decorators

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOY_CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"
MODE = black.Mode(line_length=formatting.LINE_LENGTH, target_versions={black.TargetVersion.PY310})

REGISTERED = sorted(
    {id(s): s for s in build_index(ROOT).statements.values() if s.registrations}.values(),
    key=lambda s: (s.module, s.lineno),
)


@given(statement=st.sampled_from(REGISTERED))
def test_a_registered_definition_without_its_registry_decorator_is_black_clean(statement) -> None:
    text = _drop_registry_decorators(statement)
    assert black.format_str(text, mode=MODE) == text, f"{statement.module}:{statement.lineno}"


def test_a_build_formats_the_generated_code_and_no_copied_catalog_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(TOY_CATALOG, catalog, ignore=shutil.ignore_patterns(".sigmae-cache", "__pycache__"))
    index = build_index(catalog, cache_dir=tmp_path / "cache")
    calls: list[list[str]] = []
    real = formatting.format_many

    def recording(sources, **kwargs):
        calls.append(list(sources))
        return real(sources, **kwargs)

    monkeypatch.setattr(formatting, "format_many", recording)
    import generator.inline as inline_module

    monkeypatch.setattr(inline_module, "format_many", recording)
    formatting.clear_memory_caches()
    inline_module.clear_memory_caches()
    result = build_spec(TOY, tmp_path / "out", index=index)
    formatted = [source for call in calls for source in call]
    verbatim = {s.code for s in index.statements.values() if not s.registrations}
    assert not verbatim & set(formatted), "catalog text went to black"
    assert any("class Config" in source for source in formatted) and any("def main(" in source for source in formatted)
    script = result.files["toy.py"]
    assert black.format_str(script, mode=MODE) == script


def test_compiled_templates_are_reused_and_a_damaged_entry_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jinja2
    import jinja2.bccache

    from generator.render import TEMPLATES_DIR, _CompiledTemplates

    def render() -> str:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), bytecode_cache=_CompiledTemplates(tmp_path), undefined=jinja2.StrictUndefined)
        return env.get_template("test_module.py.j2").render(bindings=[], doc_literals={})

    first = render()
    entries = list(tmp_path.iterdir())
    with monkeypatch.context() as patch:
        patch.setattr(jinja2.Environment, "compile", lambda *a, **k: pytest.fail("compiled again"))
        assert render() == first  # from the cache, without compiling
    for entry in entries:
        entry.write_bytes(jinja2.bccache.bc_magic + b"truncated")
    assert render() == first
