"""The catalog is kept black-clean at the generator's settings, so emitted definitions are
their source text verbatim and a cold build has almost nothing new to format."""

from __future__ import annotations

from pathlib import Path

import black
import pytest

from generator.formatting import LINE_LENGTH

CATALOG = Path(__file__).resolve().parent.parent / "components"
MODULES = sorted(CATALOG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(CATALOG)) for p in MODULES])
def test_catalog_module_is_black_clean(path: Path) -> None:
    mode = black.Mode(line_length=LINE_LENGTH, target_versions={black.TargetVersion.PY310})
    source = path.read_text()
    assert black.format_str(source, mode=mode) == source, f"run `black {path.relative_to(CATALOG.parent)}`"
