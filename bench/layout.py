"""Reader-order figures of an emitted script and notebook (issue 13 A.3).

    .venv/bin/python bench/layout.py                         # specs/esc50_audiomae.yaml
    .venv/bin/python bench/layout.py specs/folder_audio.yaml ...

Builds each spec into a temporary folder (the repository is never written to) and prints the
line of the script's first model definition (goal: within 600), the position of the first model
cell among the notebook's code cells (goal: among the first 8), and the lines of `main()` and of
the support banner (goal: main first). Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generator.build import build_spec  # noqa: E402
from generator.sections import layout  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="*", default=[str(REPO / "specs" / "esc50_audiomae.yaml")])
    args = parser.parse_args(argv)
    missed = False
    with tempfile.TemporaryDirectory() as out:
        for spec in args.specs:
            result = build_spec(spec, out)
            name = result.name
            script = result.files[f"{name}.py"]
            figures = layout(script, result.files.get(f"{name}.ipynb"))
            print(
                f"{name}: {len(script.splitlines())} lines; first model definition at line {figures.first_model_line}; "
                f"first model code cell {figures.first_model_code_cell}; main() at line {figures.main_line}, "
                f"support banner at line {figures.support_banner_line}"
            )
            for problem in figures.problems():
                print(f"  goal missed: {problem}")
                missed = True
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
