"""Issue 11 item 9: an output folder inside the catalog is refused, and generated files found in
a catalog are never indexed as catalog modules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from generator.build import build_spec, load_index
from generator.cli import main

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"


@pytest.fixture()
def catalog(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(CATALOG, root)
    return root


def test_an_output_folder_inside_the_catalog_is_refused_and_nothing_is_written(
    catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for inside in (catalog / "components", catalog / "components" / "out", catalog / "components" / "models" / "x"):
        code = main(["--catalog", str(catalog), "build", str(TOY), "-o", str(inside)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "lies inside the catalog" in err and err.count("\n") == 1, err
        assert not (inside / "toy").exists() and not (catalog / "components" / "out").exists()
    readme = (catalog / "components").joinpath("README.md")
    readme.write_text("the catalog's own notes\n")
    # a build named like the catalog package, into the folder that holds it
    code = main(["--catalog", str(catalog), "build", str(TOY), "--set", "name=components", "-o", str(catalog)])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1  # (the name itself is refused first)
    assert readme.read_text() == "the catalog's own notes\n" and not (catalog / "components" / "components.py").exists()
    assert main(["--catalog", str(catalog), "build", str(TOY), "-o", str(catalog / "build")]) == 0  # beside it: fine


def test_a_generated_script_inside_the_catalog_is_not_indexed(catalog: Path, tmp_path: Path) -> None:
    before = load_index(catalog, cache_dir=tmp_path / "cache1")
    result = build_spec(TOY, tmp_path / "out", catalog_root=catalog)
    # what a user may do by hand: copy the emitted script (and its tests) into the catalog
    copied = [name for name in ("toy.py", "test_toy.py") if (result.out_dir / name).is_file()]
    assert "toy.py" in copied
    for name in copied:
        shutil.copy(result.out_dir / name, catalog / "components" / name)
    after = load_index(catalog, cache_dir=tmp_path / "cache2")
    assert sorted(after.modules) == sorted(before.modules)  # neither file became a catalog module
    assert "components.toy" not in after.modules and sorted(after.components) == sorted(before.components)
    # and later builds work as before, with the same output
    again = build_spec(TOY, tmp_path / "again", catalog_root=catalog, index=after)
    assert again.files == result.files
