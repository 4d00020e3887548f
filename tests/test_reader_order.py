"""Reader order (issue 13 A): model before plumbing, main() before the support banner, and an
order that still executes where a definition is needed when another one is defined."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from generator.build import build_spec
from generator.index import build_index
from generator.inline import inline, program_text
from generator.resolve import resolve
from generator.sections import EDITS, SUPPORT, TITLES, layout

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def esc50(tmp_path_factory: pytest.TempPathFactory):
    return build_spec(ROOT / "specs" / "esc50_audiomae.yaml", tmp_path_factory.mktemp("build"))


def test_esc50_build_meets_the_layout_goals(esc50) -> None:
    figures = layout(esc50.files["esc50_audiomae.py"], esc50.files["esc50_audiomae.ipynb"])
    assert figures.problems() == []
    assert figures.first_model_line < figures.main_line < figures.support_banner_line


def test_sections_come_in_reading_order_and_support_cells_are_collapsed(esc50) -> None:
    script = esc50.files["esc50_audiomae.py"]
    markers = [line.removeprefix("# %% ") for line in script.splitlines() if line.startswith("# %% ")]
    at = {marker: position for position, marker in enumerate(markers)}
    assert at["components/models/layers.py"] < at["components/losses.py"] < at["components/transforms/kaldi.py"]
    assert at["components/transforms/kaldi.py"] < at["components/recipes/pretrain.py"] < at["components/flags.py"]
    cells = json.loads(esc50.files["esc50_audiomae.ipynb"])["cells"]
    hidden = {"cellView": "form", "jupyter": {"source_hidden": True}}
    section_of_title = {f"## {title}\n": name for name, title in TITLES.items()}
    section, counts = None, {}
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            head = source.split("\n")[0] + "\n"
            if head.startswith("## "):  # a section of the code, or the run and plot cells after it
                section = section_of_title.get(head)
                assert section is None or EDITS[section] in source  # its first cell says what to edit there
        elif section is not None:
            counts[section] = counts.get(section, 0) + 1
            collapsed = {k: cell["metadata"].get(k) for k in hidden} == hidden
            assert collapsed == (section == SUPPORT), f"{section} cell {source[:60]!r}: collapsed={collapsed}"
    assert list(counts) == ["config", "model", "objective", "data", "recipes", "main", SUPPORT]
    assert counts["model"] == 5 and counts[SUPPORT] >= 6


def catalog(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"__init__.py": "", "models/__init__.py": "", **files}.items():
        path = root / "components" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_support_code_needed_at_definition_time_moves_up_and_the_program_runs(tmp_path: Path) -> None:
    """A base class and a decorator (whose body, and what it calls, run at import) from support
    modules stand before the model that needs them; what is only called later stays below."""
    root = catalog(
        tmp_path / "catalog",
        {
            "flags.py": """
                class UsageError(Exception):
                    pass


                def later() -> str:
                    return "later"
                """,
            "tagging.py": """
                def label(name: str) -> str:
                    return name.upper()


                def tagged(cls: type) -> type:
                    cls.tag = label(cls.__name__)
                    return cls
                """,
            "models/net.py": """
                from components.flags import UsageError, later
                from components.tagging import tagged


                class NetError(UsageError):
                    pass


                @tagged
                class Net:
                    def run(self) -> str:
                        return later() + self.tag
                """,
        },
    )
    index = build_index(root, cache_dir=tmp_path / "cache")
    roots = [("components.models.net", "NetError"), ("components.models.net", "Net")]
    program = inline(index, resolve(index, roots), cache_dir=tmp_path / "cache")
    placed = [(chunk.section, chunk.path, chunk.code.count("def ") + chunk.code.count("class ")) for chunk in program.chunks]
    assert placed == [
        ("model", "components/flags.py", 1),  # UsageError only: `later` is read inside a method
        ("model", "components/tagging.py", 2),  # the decorator runs at import, and so does `label`
        ("model", "components/models/net.py", 3),  # two classes and a method
        (SUPPORT, "components/flags.py", 1),
    ]
    script = tmp_path / "program.py"
    script.write_text(program_text(program) + "\nprint(Net().run(), issubclass(NetError, Exception))\n")
    done = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["laterNET", "True"]
