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
from generator.testsuite import check_functions, check_targets, contracts_module, render_tests

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"
REPO = HERE.parent
ESC50 = REPO / "specs" / "esc50_audiomae.yaml"

APPLIES_TO = '''

def applies_to(*names: str) -> Callable[[Any], Any]:
    def mark(check: Any) -> Any:
        check.applies_to = frozenset(names)
        return check

    return mark
'''


def catalog_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture catalog, with `applies_to` in components/contracts/__init__.py."""
    catalog = tmp_path / "catalog"
    shutil.copytree(CATALOG, catalog, ignore=shutil.ignore_patterns(".sigmae-cache", "__pycache__"))
    package = catalog / "components" / "contracts" / "__init__.py"
    package.write_text(package.read_text() + "\nfrom typing import Any, Callable\n" + APPLIES_TO)
    return catalog


def add_data_check(catalog: Path, decorator: str, name: str = "check_only_some") -> None:
    contracts = catalog / "components" / "contracts" / "data.py"
    text = contracts.read_text().replace(
        "from components.registry import fixture_registry",
        "from components.contracts import applies_to\nfrom components.registry import fixture_registry",
    )
    check = f'''

{decorator}
def {name}(factory: Callable[..., Any]) -> None:
    """Only for the data sets it names."""
    assert len(factory()) > 0
'''
    contracts.write_text(text + check)


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
    index = build_index(catalog, cache_dir=tmp_path / "cache")
    with pytest.raises(SigmaeError, match=r"transform 'scale' has no contract fixture; register one with @fixture_registry.register\('transform/scale'\)"):
        render_tests(compile_spec(TOY, index=index))  # the compile stages plan the checks


def test_a_check_marked_applies_to_binds_only_to_the_components_it_names(tmp_path: Path) -> None:
    catalog = catalog_copy(tmp_path)
    add_data_check(catalog, '@applies_to("synthetic_toy")')
    index = build_index(catalog, cache_dir=tmp_path / "cache")
    text = render_tests(compile_spec(TOY, index=index))
    assert "def test_data_synthetic_toy_only_some(" in text
    assert "def test_data_toy_only_some(" not in text
    assert "def test_data_toy_items_are_labelled(" in text  # unmarked checks still reach every data set
    assert '@applies_to("synthetic_toy")' in text and "def applies_to(" in text
    assert [str(p) for p in lint(text, "test_toy.py")] == []


def test_applies_to_naming_no_registered_component_is_an_error(tmp_path: Path) -> None:
    catalog = catalog_copy(tmp_path)
    add_data_check(catalog, '@applies_to("synthetic_toys")')
    index = build_index(catalog, cache_dir=tmp_path / "cache")
    with pytest.raises(SigmaeError, match=r"contracts/data\.py:\d+:1: check_only_some: @applies_to\('synthetic_toys'\) names no registered data component; known: synthetic_toy, toy"):
        render_tests(compile_spec(TOY, index=index))  # the compile stages plan the checks


def test_applies_to_must_name_components_with_string_literals(tmp_path: Path) -> None:
    catalog = catalog_copy(tmp_path)
    add_data_check(catalog, "@applies_to(TOY_NAME)")
    contracts = catalog / "components" / "contracts" / "data.py"
    contracts.write_text(contracts.read_text() + '\nTOY_NAME = "toy"\n')
    index = build_index(catalog, cache_dir=tmp_path / "cache")
    with pytest.raises(SigmaeError, match=r'check_only_some: write @applies_to\("name", ...\) with one or more component names as string literals'):
        render_tests(compile_spec(TOY, index=index))  # the compile stages plan the checks


def test_the_real_catalogs_losses_get_the_checks_that_apply_to_them() -> None:
    text = render_tests(compile_spec(ESC50, index=build_index(REPO)))
    for loss in ("masked_mse", "info_nce", "uniformity", "soft_target_cross_entropy"):
        for generic in ("scalar_with_finite_gradients", "batch_order_does_not_matter", "bfloat16_inputs_give_the_float32_value"):
            assert f"def test_loss_{loss}_{generic}(" in text
    assert "def test_loss_info_nce_identical_orthogonal_pairs_are_analytic(" in text
    assert "def test_loss_uniformity_collapse_is_maximal(" in text
    assert "def test_loss_masked_mse_counts_masked_patches_only(" in text
    assert "def test_loss_uniformity_non_negative(" not in text
    assert "def test_loss_masked_mse_identical_orthogonal_pairs_are_analytic(" not in text
    assert "loss_factory(info_nce_loss, info_nce_fixture(tmp_path))" in text
    assert [str(p) for p in lint(text, "test_esc50_audiomae.py")] == []


def test_static_applicability_matches_what_the_toolkits_tests_read() -> None:
    """The generator (from source) and tests/contract_harness.py (from the imported check) agree."""
    import importlib

    index = build_index(REPO)
    compared = 0
    for kind in ("model", "transform", "data", "loss"):
        module = contracts_module(index, kind)
        assert module is not None, kind
        imported = importlib.import_module(module)
        for key in check_functions(index, module):
            assert check_targets(index, key) == getattr(getattr(imported, key[1]), "applies_to", None), key
            compared += 1
    assert compared >= 25


# --------------------------------------------------------------------------- bindings laid out as black does

import keyword  # noqa: E402

import black  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from generator.formatting import LINE_LENGTH  # noqa: E402
from generator.render import docstring_source  # noqa: E402
from generator.testsuite import Binding, _skeleton_text, binding_block, suite_bindings, suite_parts  # noqa: E402

BLACK = black.Mode(line_length=LINE_LENGTH, target_versions={black.TargetVersion.PY310})
SHIPPED = sorted((HERE.parent / "specs").glob("*.yaml"))


def black_of(block: str) -> str:
    return black.format_str(block + "\n", mode=BLACK).strip("\n")


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda p: p.stem)
def test_every_binding_laid_out_without_black_is_what_black_writes(spec: Path) -> None:
    compiled = compile_spec(spec)
    if compiled.tests is None:
        pytest.skip("no tests in this spec's outputs")
    parts = suite_parts(compiled)
    certain = [block for block, clean in zip(parts.blocks, parts.clean) if clean]
    assert len(certain) > len(parts.blocks) / 2, "most bindings should need no black run"
    for block in certain:
        assert black_of(block) == block


_names = st.from_regex(r"[a-z][a-z0-9_]{0,55}", fullmatch=True).filter(lambda name: not keyword.iskeyword(name))


@given(test_name=_names, check=_names, factory=_names, component=_names, fixture=_names, label=st.text(max_size=40))
def test_a_binding_is_black_clean_whenever_it_says_so(test_name: str, check: str, factory: str, component: str, fixture: str, label: str) -> None:
    binding = Binding(f"test_{test_name}", check, component, fixture, label, factory)
    block, certain = binding_block(binding, docstring_source(f"Contract {check} holds for {label} ({component})."))
    compile(block, "<binding>", "exec")
    if certain:
        assert black_of(block) == block


def test_bindings_at_exactly_the_limit_and_one_past_it_match_black() -> None:
    """The `def` line, the call line and the inner call line each at LINE_LENGTH and LINE_LENGTH + 1."""
    reached: set[tuple[str, int]] = set()
    for name_length in range(50, 66):
        for component_length in range(1, 90):
            binding = Binding("test_" + "t" * name_length, "check_cc", "C" * component_length, "fixture_f", "model 'm'", "make_factory")
            block, certain = binding_block(binding, docstring_source("Contract holds."))
            call = f"make_factory({binding.component}, fixture_f(tmp_path))"
            lengths = {"def": len(f"def {binding.test_name}(tmp_path: Path) -> None:"), "call": len(f"    check_cc({call})"), "inner": len(f"        {call}")}
            for what, length in lengths.items():
                if length in (LINE_LENGTH, LINE_LENGTH + 1):
                    reached.add((what, length))
            if certain:
                assert black_of(block) == block, block
    assert reached == {(what, length) for what in ("def", "call", "inner") for length in (LINE_LENGTH, LINE_LENGTH + 1)}


def test_bindings_at_every_line_length_around_the_limit_match_black() -> None:
    """Each split (the `def` line, the call, the inner call) on both sides of LINE_LENGTH."""
    seen = {"one line": 0, "def split": 0, "call split": 0, "uncertain": 0}
    for extra in range(0, 40):
        for name_length in (10, 60 + extra // 2):
            binding = Binding("test_" + "t" * name_length, "check_" + "c" * (extra // 3), "Comp" + "o" * extra, "fix" + "x" * (extra // 2), "model 'm'", "make_factory")
            block, certain = binding_block(binding, docstring_source("Contract holds."))
            if not certain:
                seen["uncertain"] += 1
                continue
            seen["def split" if "(\n    tmp_path" in block else "call split" if block.endswith("\n    )") else "one line"] += 1
            assert black_of(block) == block, block
    assert all(seen.values()), seen


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda p: p.stem)
def test_the_bindings_section_is_what_black_makes_of_the_whole_of_it(spec: Path) -> None:
    """The claim itself: the section as the format stage assembles it (most blocks laid out here,
    the rest through black one by one) equals black run once on the whole section, every
    binding written on its three unsplit lines."""
    from generator.formatting import format_many

    compiled = compile_spec(spec)
    if compiled.tests is None:
        pytest.skip("no tests in this spec's outputs")
    parts = suite_parts(compiled)
    sources, what = parts.format_sources()
    assembled = parts.with_formatted(format_many(sources, what=what)).skeleton
    unsplit = [
        f"def {b.test_name}(tmp_path: Path) -> None:\n    {doc}\n    {b.check}({b.factory}({b.component}, {b.fixture}(tmp_path)))"
        for b, doc in suite_bindings(compiled)
    ]
    assert assembled == black_of(_skeleton_text(unsplit))


def test_the_bindings_template_is_black_clean_around_its_blocks() -> None:
    """The format stage never sends the template's own tests to black: they must be its layout."""
    compiled = compile_spec(SHIPPED[0])
    parts = suite_parts(compiled)
    skeleton = _skeleton_text([block for block, clean in zip(parts.blocks, parts.clean) if clean])
    assert "def test_smoke_train_steps" in skeleton and "def make_factory" in skeleton
    assert black.format_str(skeleton + "\n", mode=BLACK) == skeleton + "\n"
