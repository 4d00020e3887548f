"""The compile cache (generator/compiled.py): a rebuild reuses resolve + inline only while every
catalog fact they read is unchanged, and then writes exactly what a full compile writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from generator.build import build_spec, compile_spec
from generator.compiled import NAMESPACE
from generator.index import build_index

HERE = Path(__file__).resolve().parent
TOY_CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"

UNREAD = '''"""A module no toy build reads."""

from __future__ import annotations


def unread(value: float) -> float:
    return value * 2.0
'''

REGISTERED = "from components.registry import model_registry\n\n\n@model_registry.register(\"unread\", version=\"1.0\")\ndef unread("  # it registers a model


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(TOY_CATALOG, root, ignore=shutil.ignore_patterns(".sigmae-cache", "__pycache__"))
    (root / "components" / "unread.py").write_text(UNREAD, encoding="utf-8")
    return root


def compiled(root: Path, **kwargs):
    """A compile in a fresh index (what a new `sigmae-gen build` process has)."""
    return compile_spec(TOY, index=build_index(root), **kwargs)


def built(root: Path, out: Path, **kwargs) -> dict[str, str]:
    return dict(build_spec(TOY, out, index=build_index(root), **kwargs).files)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_rebuild_reuses_the_compile_and_writes_the_same_bytes(catalog: Path, tmp_path: Path) -> None:
    first = compiled(catalog)
    assert not first.reused
    again = compiled(catalog)
    assert again.reused
    assert again.program == first.program and again.resolution == first.resolution and again.tests == first.tests
    assert "components.unread" not in first.index.loaded_modules()
    assert "components.models.tiny" in first.index.loaded_modules()
    # a hit reads no module beyond what building the index itself reads
    assert set(again.index.loaded_modules()) == set(build_index(catalog).loaded_modules())
    reused = built(catalog, tmp_path / "a")
    assert built(catalog, tmp_path / "b", use_cache=False) == reused


def test_an_edit_to_a_module_the_compile_read_is_a_miss(catalog: Path, tmp_path: Path) -> None:
    compiled(catalog)
    edit(catalog / "components" / "models" / "tiny.py", "return sum(values) / max(1, len(values))", "return sum(values) / max(2, len(values))")
    after = compiled(catalog)
    assert not after.reused
    assert "max(2, len(values))" in "".join(chunk.code for chunk in after.program.chunks)
    assert built(catalog, tmp_path / "a") == built(catalog, tmp_path / "b", use_cache=False)


def test_an_edit_to_a_base_class_module_is_a_miss(catalog: Path) -> None:
    """Read through an import (tiny.py imports it), not named by the spec."""
    compiled(catalog)
    path = catalog / "components" / "models" / "base.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\nEXTRA = 1\n", encoding="utf-8")
    assert not compiled(catalog).reused


def test_an_edit_to_a_module_no_build_reads_is_a_hit(catalog: Path, tmp_path: Path) -> None:
    compiled(catalog)
    edit(catalog / "components" / "unread.py", "value * 2.0", "value * 3.0")
    assert compiled(catalog).reused
    assert built(catalog, tmp_path / "a") == built(catalog, tmp_path / "b", use_cache=False)


def test_a_registration_in_a_module_no_build_read_is_a_miss(catalog: Path) -> None:
    """The registry comes from every module's summary: a new component anywhere can change the
    test plan (a contract fixture, say), so a module that starts registering one is a miss."""
    compiled(catalog)
    edit(catalog / "components" / "unread.py", "def unread(", REGISTERED)
    assert not compiled(catalog).reused


def test_a_new_module_is_a_miss(catalog: Path) -> None:
    """A new module can turn a name that was undefined into a module the resolver follows."""
    compiled(catalog)
    (catalog / "components" / "added.py").write_text('"""Added."""\n', encoding="utf-8")
    assert not compiled(catalog).reused


def test_a_removed_module_is_a_miss(catalog: Path) -> None:
    compiled(catalog)
    (catalog / "components" / "unread.py").unlink()
    assert not compiled(catalog).reused


@pytest.mark.parametrize("damage", [b"", b"not a pickle", b"\x80\x05garbage"])
def test_a_damaged_entry_is_a_miss_and_is_replaced(catalog: Path, tmp_path: Path, damage: bytes) -> None:
    reference = built(catalog, tmp_path / "a", use_cache=False)
    compiled(catalog)
    entries = [p for p in (catalog / ".sigmae-cache" / NAMESPACE).glob("??/*") if p.is_file()]
    assert len(entries) == 1
    entries[0].write_bytes(damage)
    assert not compiled(catalog).reused
    assert compiled(catalog).reused  # the miss wrote a good entry again
    assert built(catalog, tmp_path / "b") == reference


def test_use_cache_false_neither_reads_nor_writes(catalog: Path) -> None:
    compiled(catalog, use_cache=False)
    assert not (catalog / ".sigmae-cache" / NAMESPACE).exists()
    compiled(catalog)
    assert not compiled(catalog, use_cache=False).reused


def test_a_spec_edit_that_keeps_the_components_reuses_the_compile(catalog: Path, tmp_path: Path) -> None:
    """The common loop: change a number in the spec, rebuild."""
    spec = tmp_path / "toy.yaml"
    spec.write_text(TOY.read_text(encoding="utf-8"), encoding="utf-8")
    assert not compile_spec(spec, index=build_index(catalog)).reused
    edit(spec, "epochs: 3", "epochs: 5")
    assert compile_spec(spec, index=build_index(catalog)).reused
    edit(spec, "- {use: evaluate}", "- {use: evaluate, name: evaluate_twice}")  # a new skeleton name: another key
    assert not compile_spec(spec, index=build_index(catalog)).reused


def test_a_changed_registration_in_a_module_no_build_read_is_a_miss(catalog: Path) -> None:
    """Registrations come from every module's summary, which the test plan consults."""
    edit(catalog / "components" / "unread.py", "def unread(", REGISTERED)
    assert "components.unread" not in compiled(catalog).index.loaded_modules()
    edit(catalog / "components" / "unread.py", 'version="1.0"', 'version="1.1"')
    assert not compiled(catalog).reused


def test_any_other_edit_to_a_registering_module_no_build_read_is_a_hit(catalog: Path) -> None:
    edit(catalog / "components" / "unread.py", "def unread(", REGISTERED)
    compiled(catalog)
    edit(catalog / "components" / "unread.py", "value * 2.0", "value * 3.0")
    assert compiled(catalog).reused


def test_a_module_moved_into_a_package_is_a_miss(catalog: Path, tmp_path: Path) -> None:
    """Same name, same bytes, another path: every provenance comment and source path changes."""
    compiled(catalog)
    models = catalog / "components" / "models"
    (models / "tiny").mkdir()
    (models / "tiny.py").rename(models / "tiny" / "__init__.py")
    after = compiled(catalog)
    assert not after.reused and "components/models/tiny/__init__.py" in after.sources
    assert built(catalog, tmp_path / "a") == built(catalog, tmp_path / "b", use_cache=False)


def test_another_python_is_another_entry(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builtins and standard-library names differ between Python versions."""
    compiled(catalog)
    monkeypatch.setattr("generator.compiled.sys.version", "3.99.0 (a later Python)")
    assert not compiled(catalog).reused


def test_another_generator_is_a_miss(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled(catalog)
    monkeypatch.setattr("generator.compiled.GENERATOR_VERSION", "0" * 16)
    assert not compiled(catalog).reused


def test_switching_the_test_module_on_or_off_is_another_entry(catalog: Path, tmp_path: Path) -> None:
    spec = tmp_path / "toy.yaml"
    spec.write_text(TOY.read_text(encoding="utf-8") + "outputs: [script]\n", encoding="utf-8")
    compiled(catalog)
    without = compile_spec(spec, index=build_index(catalog))
    assert not without.reused and without.tests is None
    assert compiled(catalog).reused and compiled(catalog).tests is not None


def test_an_unwritable_cache_only_costs_the_compile(catalog: Path, tmp_path: Path) -> None:
    (catalog / ".sigmae-cache").mkdir()
    (catalog / ".sigmae-cache" / NAMESPACE).write_text("not a folder", encoding="utf-8")
    reference = built(catalog, tmp_path / "a", use_cache=False)
    assert not compiled(catalog).reused and not compiled(catalog).reused
    assert built(catalog, tmp_path / "b") == reference
