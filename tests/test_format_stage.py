"""The format stage: black runs on what the generator writes, never on catalog text it copies.

The catalog is black-clean (tests/test_catalog_style.py), so a definition emitted as its
source text (registry decorators dropped) is black-clean too; only the generated skeleton (in
the build's one format call) and the renamed definitions whose respelled lines black could
reshape (formatting.stays_black_clean) go to black.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import black
import pytest
from hypothesis import assume, given, settings, strategies as st

import generator.formatting as formatting
from generator.analysis import CatalogError
from generator.build import build_spec
from generator.formatting import stays_black_clean
from generator.index import build_index
from generator.inline import _drop_registry_decorators
from generator.rename import rewrite_names

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOY_CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"
MODE = black.Mode(line_length=formatting.LINE_LENGTH, target_versions={black.TargetVersion.PY310})

STATEMENTS = sorted({id(s): s for s in build_index(ROOT).statements.values()}.values(), key=lambda s: (s.module, s.lineno))
REGISTERED = [s for s in STATEMENTS if s.registrations]


@given(statement=st.sampled_from(REGISTERED))
def test_a_registered_definition_without_its_registry_decorator_is_black_clean(statement) -> None:
    text = _drop_registry_decorators(statement)
    assert black.format_str(text, mode=MODE) == text, f"{statement.module}:{statement.lineno}"


@settings(max_examples=80, deadline=None)
@given(statement=st.sampled_from(STATEMENTS), data=st.data())
def test_a_renamed_definition_left_unformatted_is_what_black_would_write(statement, data) -> None:
    """stays_black_clean is a sufficient condition: whenever it spares black, black agrees."""
    names = sorted({use.name for use in statement.uses} | set(statement.names))
    assume(names)
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    spell = data.draw(st.sampled_from(["longer", "shorter"]))
    suffix = data.draw(st.text(alphabet="xyz_", min_size=1, max_size=30))
    renames = {name: (name + "_" + suffix if spell == "longer" else name[:2] + "Q") for name in chosen}
    try:
        renamed = rewrite_names(statement.code, names=renames, attrs={}, local_imports={}, where="test")
    except CatalogError:  # a local hides the new name
        assume(False)
    if stays_black_clean(statement.code, renamed):
        assert black.format_str(renamed, mode=MODE) == renamed, f"{statement.module}:{statement.lineno} {renames}"


EXPLODED = (
    "def convert(\n"
    "    model: Module,\n"
    "    state: Mapping[str, Tensor],\n"
    "    tensors,\n"
    ") -> dict[str, Tensor]:\n"
    "    return dict(state)\n"
)
SPLIT = (
    "def read_rows_of_a_table(\n"
    "    path: str | PathLike[str], columns: Sequence[str], expected_value: Mapping\n"
    ") -> list[dict[str, str]]:\n"
    "    return []\n"
)
LONG_CALL = "def f(x):\n    return helper(x, another_argument, yet_another_argument, and_one_more_argument_too)\n"


@pytest.mark.parametrize(
    ("original", "renamed", "spared"),
    [
        ("def f(x):\n    return Foo(x)\n", "def f(x):\n    return Foo_models(x)\n", True),
        ("x = 1\n", "x = 1\n", True),
        (LONG_CALL, LONG_CALL.replace("helper", "helper_with_a_longer_name"), False),  # > 88 columns now
        (
            "value = compute(\n    first_argument_name, second_argument_name, third_argument_name_x\n)\n",
            "value = compute(\n    first, second_argument_name, third_argument_name_x\n)\n",
            False,  # inside brackets: black might join the lines now
        ),
        ("def f(x):\n    return Foo(x)\n", "def f(x):\n    y = 1\n    return Foo(x)\n", False),  # a line added
        ("def f(x):\n    return Foo(x)\n", "def f(x):\n    return Foo(x)  # é\n", False),  # not ASCII
        ("y = Foo\n", "y = match\n", False),  # a soft keyword
        # a def header split one parameter a line (magic trailing comma): kept while each line fits
        (EXPLODED, EXPLODED.replace("Mapping", "Mapping_abc"), True),
        (EXPLODED, EXPLODED.replace("Mapping", "Mapping_with_a_much_longer_name_that_can_no_longer_fit_in_one_line_of_eighty_eight"), False),
        (EXPLODED.replace("tensors,", "tensors,  # note"), EXPLODED.replace("tensors,", "tensors,  # note").replace("Mapping", "M"), False),
        # `def f(` / parameters / `) -> R:`: kept while the joined header is still too long
        (SPLIT, SPLIT.replace("Mapping", "Mapping_abc"), True),
        (SPLIT, SPLIT.replace("Mapping", "M").replace("Sequence", "S").replace("read_rows_of_a_table", "rd").replace("expected_value", "e").replace("PathLike", "P"), False),
        (SPLIT, SPLIT.replace("Sequence", "Sequence_with_a_longer_name_x"), False),  # the parameters line too long
    ],
)
def test_stays_black_clean_spares_black_only_for_whole_lines_that_still_fit(original, renamed, spared) -> None:
    assert stays_black_clean(original, renamed) is spared
    if spared:
        assert black.format_str(renamed, mode=MODE) == renamed


PREPARED_CASES = [
    "x = 'plain'\ny = 'it\\'s'\nz = '\"q\"'\nb = b'bytes'\nr = r'raw'\n",
    "name = f'{value!r} {\"inner\"}'\nother = f'{x}' 'tail'\n",
    'class A:\n    """Doc.\n\n    Args:\n        x: \'quoted\' here.\n"""\n\n    x: int = 1\n',
    'def f():\n    """Doc.\n"""\n    return """not a docstring\n"""\n',
    'TEXT = """kept as written\n"""\n',
    "label = 'é'; other = 'ascii'\n",
    "call(argument_number_one='a long value', argument_number_two='another long value', three='x')\n",
    "x = 'no final newline'",
]


@pytest.mark.parametrize("source", PREPARED_CASES)
def test_preparing_for_black_does_not_change_what_black_writes(source: str) -> None:
    assert black.format_str(formatting._prepared(source), mode=MODE) == black.format_str(source, mode=MODE)


def test_a_prepared_class_black_leaves_alone_is_formatted_in_one_pass() -> None:
    raw = "@dataclass\nclass A:\n    \"\"\"Doc.\n\n    Args:\n        x: 'quoted'.\n\"\"\"\n\n    x: Literal['a', 'b'] = 'a'"
    prepared = formatting._prepared(raw)
    assert prepared == black.format_str(raw, mode=MODE)  # black's first pass would leave it as it is
    assert "'quoted'" in prepared  # docstring text is never respelled


def _unprepared(code: str) -> str:
    """Black-clean catalog text respelled as the generator writes its code: simple strings in
    single quotes, docstrings closing at column 0."""
    import ast

    lines = code.split("\n")
    for node in ast.walk(ast.parse(code)):
        if type(node) is ast.Constant and isinstance(node.value, str) and node.lineno == node.end_lineno:
            line = lines[node.lineno - 1]
            text = line[node.col_offset : node.end_col_offset] if line.isascii() else ""
            if len(text) >= 2 and text[0] == text[-1] == '"' and not set(text[1:-1]) & {"'", '"', "\\"}:
                lines[node.lineno - 1] = line[: node.col_offset] + "'" + text[1:-1] + "'" + line[node.end_col_offset :]
    return "\n".join('"""' if line.strip() == '"""' else line for line in lines)


@settings(max_examples=40, deadline=None)
@given(statement=st.sampled_from(STATEMENTS))
def test_preparing_catalog_code_written_the_generators_way_changes_nothing_black_writes(statement) -> None:
    raw = _unprepared(statement.code)
    assert black.format_str(formatting._prepared(raw), mode=MODE) == black.format_str(raw, mode=MODE)


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
        return env.get_template("test_module.py.j2").render(blocks=[])

    first = render()
    entries = list(tmp_path.iterdir())
    with monkeypatch.context() as patch:
        patch.setattr(jinja2.Environment, "compile", lambda *a, **k: pytest.fail("compiled again"))
        assert render() == first  # from the cache, without compiling
    for entry in entries:
        entry.write_bytes(jinja2.bccache.bc_magic + b"truncated")
    assert render() == first


def test_a_catalog_edit_does_not_send_the_unchanged_skeleton_to_black(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """main() carries the spec's sha256, which every catalog edit changes: the format stage
    formats (and caches) it with a same-length stand-in, and the output is what black gives."""
    catalog = tmp_path / "catalog"
    shutil.copytree(TOY_CATALOG, catalog, ignore=shutil.ignore_patterns(".sigmae-cache", "__pycache__"))
    before = build_spec(TOY, tmp_path / "out", index=build_index(catalog)).files["toy.py"]
    tiny = catalog / "components" / "models" / "tiny.py"
    tiny.write_text(tiny.read_text(encoding="utf-8").replace("max(1, len(values))", "max(2, len(values))"), encoding="utf-8")
    formatting.clear_memory_caches()
    blacked: list[str] = []
    real = formatting._black

    def recording(source: str):
        blacked.append(source)
        return real(source)

    monkeypatch.setattr(formatting, "_black", recording)
    after = build_spec(TOY, tmp_path / "out", index=build_index(catalog)).files["toy.py"]
    assert not blacked, "the skeleton went to black again after a catalog edit"
    old_hash, new_hash = (text.split("# sha256: ")[1].split("\n")[0] for text in (before, after))
    assert old_hash != new_hash and f'spec_hash="{new_hash}"' in after and old_hash not in after
    fresh = tmp_path / "fresh"
    shutil.copytree(catalog, fresh, ignore=shutil.ignore_patterns(".sigmae-cache", "__pycache__"))
    formatting.clear_memory_caches()
    assert build_spec(TOY, tmp_path / "out2", index=build_index(fresh), use_cache=False).files["toy.py"] == after
    assert blacked, "the fresh build formats"


def test_the_stand_in_hash_formats_exactly_as_the_real_one() -> None:
    """black on the real hash (no stand-in: ``spec_hash=""``) and on the stand-in, swapped back."""
    from generator.build import compile_spec, format_generated
    from generator.render import script_parts

    compiled = compile_spec(TOY, index=build_index(TOY_CATALOG), use_cache=False)
    parts = script_parts(compiled.spec, compiled.program, spec_hash=compiled.spec_hash)
    assert compiled.spec_hash in parts.entry
    formatting.clear_memory_caches()
    direct, _ = format_generated(parts, None, cache_dir=None)
    swapped, _ = format_generated(parts, None, cache_dir=None, spec_hash=compiled.spec_hash)
    assert (swapped.skeleton, swapped.entry) == (direct.skeleton, direct.entry)
    assert compiled.spec_hash in swapped.entry
