"""The emitted test module: every contract check bound to every component, passing from a bare copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generator.build import build_spec, compile_spec
from generator.errors import SigmaeError
from generator.index import build_index
from generator.lint import lint
from generator.testsuite import render_tests

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"


@pytest.fixture(scope="module")
def toy_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_spec(TOY, tmp_path_factory.mktemp("build"), index=build_index(CATALOG)).out_dir


def test_every_check_is_bound_to_every_component_of_its_kind(toy_build: Path) -> None:
    text = (toy_build / "test_toy.py").read_text()
    expected = [
        "test_data_synthetic_toy_items_are_labelled",
        "test_data_toy_items_are_labelled",
        "test_model_tiny_output_width",
        "test_transform_scale_fixed_length",
        "test_smoke_train_steps",
        "test_checkpoint_round_trip",
    ]
    for name in expected:
        assert f"def {name}(" in text
    assert "from toy import Scale, SyntheticToy, TinyModel, ToyData, main" in text
    assert "deep_fixture" not in text  # the script has no DeepModel, so neither do its tests
    assert "fixture_registry" not in text and "from components" not in text
    assert [str(p) for p in lint(text, "test_toy.py")] == []


def test_emitted_suite_passes_from_a_bare_copy_of_the_build_folder(toy_build: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "toy"
    shutil.copytree(toy_build, copy)
    done = subprocess.run(
        [sys.executable, "-I", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_toy.py"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "6 passed" in done.stdout


def test_a_component_without_contract_fixture_is_named(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(CATALOG, catalog, ignore=shutil.ignore_patterns(".sigmae-cache", "__pycache__"))
    contracts = catalog / "components" / "contracts" / "transform.py"
    contracts.write_text(contracts.read_text().replace('@fixture_registry.register("transform/scale")\n', ""))
    compiled = compile_spec(TOY, index=build_index(catalog, cache_dir=tmp_path / "cache"))
    with pytest.raises(SigmaeError, match=r"transform 'scale' has no contract fixture; register one with @fixture_registry.register\('transform/scale'\)"):
        render_tests(compiled)
