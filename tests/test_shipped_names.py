"""The shipped scripts spell every catalog name as the catalog does: no definition or import is
renamed to dodge a collision (``Mapping_abc``, ``helper_toy``), which a reader would have to
decode. The inliner handles collisions in any catalog; in the shipped ones, fix them at the source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPS = sorted((ROOT / "build").glob("*/*.map.json"))


@pytest.mark.parametrize("path", MAPS, ids=lambda p: p.parent.name)
def test_no_shipped_script_renames_a_catalog_name(path: Path) -> None:
    renamed = {
        emitted: f"{entry['catalog']}::{entry['symbol']} ({catalog})"
        for entry in json.loads(path.read_text(encoding="utf-8"))["definitions"]
        for emitted, catalog in entry["renames"].items()
    }
    assert not renamed, (
        f"{path.relative_to(ROOT)}: the inliner renamed {len(renamed)} name(s) to avoid a collision: "
        + "; ".join(f"{emitted} in {where}" for emitted, where in sorted(renamed.items()))
        + ". Import each name the same way in every catalog module (collections.abc, not typing, for "
        "Mapping and Sequence) or give colliding definitions distinct names, then rebuild"
    )


def test_there_are_shipped_maps() -> None:
    assert len(MAPS) >= 5
