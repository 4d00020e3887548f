"""Self-documenting flags: `Args:` docstrings of every component reach `--help`, the build
README and `sigmae-gen list`; booleans read `--x` / `--no-x`; one `--download` flag."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.flags import build_arg_parser, docstring_args, flag_specs, parse_config
from generator.analysis import docstring_args as static_docstring_args
from generator.build import build_spec
from generator.cli import main as cli_main
from generator.errors import SigmaeError
from generator.index import build_index

ROOT = Path(__file__).resolve().parent.parent
ESC50_SPEC = ROOT / "specs" / "esc50_audiomae.yaml"
ESC50_ROOT_HELP = "The ESC-50-master folder of the ESC-50 download"


@pytest.fixture(scope="module")
def index():
    return build_index(ROOT)


# ----------------------------------------------------------------------------- the catalog's docstrings
def test_every_registered_parameter_has_an_args_entry_and_every_entry_a_parameter(index) -> None:
    """Adding a parameter without an `Args:` line (or leaving a line for a removed one) fails here."""
    problems = []
    records = [c for c in index.components.values() if c.kind != "fixture"]
    run_options = index.statements[("components.runtime", "RunOptions")]
    for where, what, params, doc in [
        *((f"{c.path.as_posix()}:{c.lineno}", f"{c.qualname} ({c.kind} {c.name!r})", c.params, c.doc) for c in records),
        (f"components/runtime.py:{run_options.lineno}", "RunOptions (the run flags)", run_options.params, run_options.doc),
    ]:
        for param in params:
            if not param.description:
                problems.append(f"{where}: {what}: parameter {param.name!r} has no `Args:` entry in the docstring")
        for name in static_docstring_args(doc).keys() - {p.name for p in params}:
            problems.append(f"{where}: {what}: `Args:` names {name!r}, which is not a parameter")
    assert len(records) >= 20 and run_options.params
    assert not problems, "\n".join(problems)


def test_the_runtime_reads_catalog_docstrings_as_the_generator_does(index) -> None:
    docs = [c.doc for c in index.components.values() if "Args:" in c.doc]
    assert len(docs) >= 20
    for doc in docs:
        assert docstring_args(doc) == static_docstring_args(doc)


names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
words = st.text(alphabet="abcdefghij(),.;:=-_ 0123456789", min_size=1, max_size=14).map(str.strip).filter(bool)


@given(
    summary=st.lists(words, min_size=1, max_size=3).map(" ".join),
    entries=st.dictionaries(names, st.lists(words, min_size=1, max_size=30).map(" ".join), min_size=1, max_size=6),
    width=st.integers(40, 100),
    indent=st.sampled_from(["", "    ", "        "]),
    tail=st.sampled_from(["", "\nReturns:\n    the result.\n", "\nRaises:\n    ValueError: never.\n"]),
)
def test_wrapped_args_entries_read_back_as_one_line_each(summary: str, entries: dict[str, str], width: int, indent: str, tail: str) -> None:
    lines = [summary, "", "Args:"]
    for name, text in entries.items():
        lines.append(textwrap.fill(f"{name}: {text}", width, initial_indent="    ", subsequent_indent="        ", break_long_words=False))
    doc = textwrap.indent("\n".join(lines) + "\n" + tail, indent).lstrip()  # as a docstring's first line sits
    expected = {name: " ".join(text.split()) for name, text in entries.items()}
    assert docstring_args(doc) == expected
    assert static_docstring_args(doc) == expected


# ----------------------------------------------------------------------------- flags.py
@dataclass
class RunSection:
    """Run flags.

    Args:
        smoke: Tiny run on synthetic data.
        out_dir: Where results go, in 100 %
            of cases.
        steps: Step cap.
        dtype: Precision.
    """

    smoke: bool = False
    out_dir: str | None = None
    steps: int | None = None  # parse_config checks these two
    dtype: str = "auto"


@dataclass
class DataSection:
    """Data.

    Args:
        cache: Keep decoded clips.
    """

    cache: bool = True
    root: str = field(default="data", metadata={"help": "Folder of the clips."})
    mode: str = "fast"


@dataclass
class HelpConfig:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)


PIPELINE = SimpleNamespace(name="demo", spec_hash="0" * 64, smoke={"data": {"num_items": 2}})


def test_help_shows_each_description_with_type_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_arg_parser(PIPELINE, HelpConfig).parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's wrapping
    assert "--smoke, --no-smoke Tiny run on synthetic data. (bool, default: False)" in out
    assert "--out-dir DIR Where results go, in 100 % of cases. (str | None, default: None)" in out
    assert "--data.root PATH Folder of the clips. (str, default: 'data')" in out  # metadata["help"]
    assert "--data.cache, --no-data.cache Keep decoded clips. (bool, default: True)" in out
    assert "--data.mode TEXT (str, default: 'fast')" in out  # undocumented: type and default only
    assert [spec.help for spec in flag_specs(HelpConfig)][:2] == ["Tiny run on synthetic data.", "Where results go, in 100 % of cases."]


@pytest.mark.parametrize(
    "argv, smoke, cache",
    [
        ([], False, True),
        (["--smoke"], True, True),
        (["--no-smoke"], False, True),
        (["--smoke", "--no-smoke"], False, True),  # the last one wins
        (["--smoke", "false", "--data.cache", "false"], False, False),  # the older spelling still parses
        (["--smoke", "true", "--no-data.cache"], True, False),
        (["--data.cache", "yes"], False, True),
    ],
)
def test_booleans_read_x_and_no_x_and_an_explicit_value(argv: list[str], smoke: bool, cache: bool) -> None:
    config = parse_config(PIPELINE, HelpConfig, argv)
    assert (config.run.smoke, config.data.cache) == (smoke, cache)


def test_a_no_flag_given_explicitly_beats_the_smoke_override() -> None:
    pipeline = SimpleNamespace(name="demo", spec_hash="0" * 64, smoke={"data": {}, "extra": {"cache": True}})

    @dataclass
    class Extra:
        cache: bool = False

    @dataclass
    class SmokeConfig:
        run: RunSection = field(default_factory=RunSection)
        extra: Extra = field(default_factory=Extra)

    assert parse_config(pipeline, SmokeConfig, ["--smoke"]).extra.cache is True
    assert parse_config(pipeline, SmokeConfig, ["--smoke", "--no-extra.cache"]).extra.cache is False
    assert parse_config(pipeline, SmokeConfig, ["--no-extra.cache", "--smoke"]).extra.cache is False


@pytest.mark.parametrize("argv, fragment", [(["--no-smoke", "true"], "--no-smoke takes no value"), (["--smoke", "maybe"], "expected true or false")])
def test_bad_boolean_values_exit_2(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config(PIPELINE, HelpConfig, argv)
    assert exited.value.code == 2 and fragment in capsys.readouterr().err


# ----------------------------------------------------------------------------- the generator
def test_sigmae_gen_list_shows_descriptions_beside_the_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--catalog", str(ROOT), "list", "--kind", "data"]) == 0
    lines = capsys.readouterr().out.splitlines()
    root = next(line for line in lines if 'root: str = "data/ESC-50-master"' in line)
    assert root.rstrip().endswith("overrides it.") and ESC50_ROOT_HELP in root


def test_a_spec_setting_data_download_is_told_to_use_the_flag(tmp_path: Path, index) -> None:
    with pytest.raises(SigmaeError, match=r"data\.with\.download: the script's --download flag"):
        build_spec(ESC50_SPEC, tmp_path, overrides=["data.with.download=true"], index=index)


@pytest.fixture(scope="module")
def esc50_build(tmp_path_factory: pytest.TempPathFactory, index) -> Path:
    out = tmp_path_factory.mktemp("esc50_help")
    build_spec(ESC50_SPEC, out, index=index)
    return out / "esc50_audiomae"


@pytest.fixture(scope="module")
def esc50_script(esc50_build: Path) -> types.ModuleType:
    """The emitted script, imported (one torch import for every test here, not one per run)."""
    spec = importlib.util.spec_from_file_location("esc50_help_script", esc50_build / "esc50_audiomae.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building classes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def run_script(script: types.ModuleType, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = script.main(list(argv))
    except SystemExit as exited:  # argparse's --help and usage errors
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_emitted_help_explains_every_flag_and_has_one_download_flag(
    esc50_build: Path, esc50_script: types.ModuleType, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "Args:\n        root: The ESC-50-master folder" in (esc50_build / "esc50_audiomae.py").read_text()
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run_script(esc50_script, capsys, "--help")
    assert code == 0, err
    flat = " ".join(out.split())
    assert f"--data.root PATH {ESC50_ROOT_HELP}" in flat and "(str, default: 'data/ESC-50-master')" in flat
    assert "--smoke, --no-smoke Tiny run" in flat and "--download, --no-download Fetch the data set" in flat
    assert "--pretrain.base_lr X Learning rate per 256 clips" in flat
    assert "--data.download" not in flat
    assert len([line for line in out.splitlines() if line.startswith("  --")]) > 100


def test_download_reaches_the_data_set_and_data_download_is_gone(
    esc50_script: types.ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = tmp_path / "ESC-50-master"
    code, _, err = run_script(esc50_script, capsys, "--data.download", "--data-dir", str(root))
    assert code == 2 and "unrecognized arguments: --data.download" in err
    args = ["--data-dir", str(root), "--data.url", (tmp_path / "no-such-mirror.zip").as_uri(), "--out-dir", str(tmp_path / "run")]
    code, _, err = run_script(esc50_script, capsys, *args)
    assert code == 2 and "Run with --download" in err and "no-such-mirror.zip" not in err
    code, _, err = run_script(esc50_script, capsys, "--download", *args)
    assert code == 2 and "Traceback" not in err
    assert "urlopen error" in err and "no-such-mirror.zip" in err  # it tried the download from --data.url


def test_build_readme_flag_table_has_the_descriptions(esc50_build: Path) -> None:
    readme = (esc50_build / "README.md").read_text()
    assert "| flag | default | what it does |" in readme
    row = next(line for line in readme.splitlines() if line.startswith("| `--data.root`"))
    assert "`'data/ESC-50-master'`" in row and ESC50_ROOT_HELP in row
    assert "| `--smoke` / `--no-smoke` | `False` | Tiny run on the spec's synthetic smoke data" in readme
    assert "`--data.download`" not in readme and "| `--download` / `--no-download` |" in readme
    rows = [line for line in readme.split("## Every flag", 1)[1].splitlines() if line.startswith("| `--")]
    assert rows and all(not line.rstrip().endswith("|  |") for line in rows)  # none without a description


def test_type_labels_read_as_the_annotation_is_written() -> None:
    import collections.abc
    import typing

    from components.flags import _type_label

    assert _type_label(collections.abc.Sequence[int]) == "Sequence[int]"
    assert _type_label(typing.Optional[collections.abc.Mapping[str, float]]) == "Optional[Mapping[str, float]]"
    assert _type_label(int) == "int"
