"""Reader order: which section of the emitted script each definition stands in.

The script reads top to bottom as its user reads it: the configuration, the model, the
objective, the data, the recipes, ``main()``, then a bannered support section (flags,
distributed set-up, checkpoint I/O, metrics, plots, signals, runtime). A definition's
section is its catalog module's (`SECTION_OF_MODULE`, one small table); Python allows the
plumbing to come last because it is used inside function bodies only. A definition that an
earlier section needs when it is defined (a base class, a decorator, a default value, a
function called at import, a record the generated `Config` builds) moves up into that
section, so the emitted order still executes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from generator.analysis import TopLevel
from generator.index import CatalogIndex
from generator.ir import DefinitionKey
from generator.resolve import dependencies

# Sections in reading order; `main()` (generated) stands between the recipes and the support.
SECTIONS = ("config", "model", "objective", "data", "recipes", "support")
SUPPORT = "support"

# Catalog module (dotted, below the catalog package) -> section; the longest matching prefix
# wins, and a module no entry matches is support (flags, distributed, checkpoint, metrics,
# plots, runtime, the loops' bookkeeping in loop_support, contracts, registry).
SECTION_OF_MODULE: dict[str, str] = {
    "models": "model",
    "models.official_weights": SUPPORT,  # official-weight conversion: plumbing, not the architecture
    "losses": "objective",
    "objectives": "objective",
    "transforms": "data",
    "data": "data",
    "data.audio_io": SUPPORT,  # WAV parsing, decoders, the waveform cache: plumbing under the data sets
    "data.download": SUPPORT,  # streamed downloads and safe extraction: plumbing under --download
    "recipes": "recipes",
    "recipes.guards": SUPPORT,  # warnings about results that may mean nothing: plumbing around the loops
}

# Records the generated `Config` builds when its class is defined (`field(default_factory=...)`).
CONFIG_RECORDS: tuple[tuple[str, str], ...] = (("runtime", "RunOptions"),)

TITLES = {
    "config": "Configuration",
    "model": "Model",
    "objective": "Objective",
    "data": "Transform and data",
    "recipes": "Recipes",
    "main": "Entry point",
    SUPPORT: "Support",
}

# What a user edits in each section, in one sentence (banner of the script, notebook cell).
EDITS = {
    "config": "Edit the defaults here (every field is also a command-line flag).",
    "model": "Edit the architecture here: the blocks, then the model, then the classifier head.",
    "objective": "Edit the training objectives and their losses here.",
    "data": "Edit the front end (features) and the data sets here.",
    "recipes": "Edit the training and evaluation loops here, one recipe per step of the spec.",
    "main": "Edit which components and steps run here.",
    SUPPORT: "Flags, distributed set-up, checkpoint I/O, metrics, plots, signals and the "
    "runtime: rarely edited.",
}

SUPPORT_BANNER = "# SUPPORT: everything below is plumbing"


def section_of_module(module: str, package: str) -> str:
    """The section of catalog module ``module`` (``components.models.layers`` -> ``model``)."""
    relative = module.removeprefix(package + ".") if module != package else ""
    parts = relative.split(".")
    for length in range(len(parts), 0, -1):
        found = SECTION_OF_MODULE.get(".".join(parts[:length]))
        if found is not None:
            return found
    return SUPPORT


@dataclass(frozen=True)
class Placed:
    section: str
    statement: TopLevel


def reading_order(
    index: CatalogIndex, statements: Sequence[TopLevel], *, early: Collection[DefinitionKey] = ()
) -> list[Placed]:
    """``statements`` (in the resolver's order, which executes) laid out in reading order.

    Sections come in `SECTIONS` order; inside a section the resolver's module order and the
    source order are kept. ``early``: definitions the skeleton's `Config` needs when it is
    defined (default: `CONFIG_RECORDS` of this catalog).
    """
    sid = {(s.module, s.index): position for position, s in enumerate(statements)}
    rank = [SECTIONS.index(section_of_module(s.module, index.package)) for s in statements]
    module_order: dict[str, int] = {}
    for statement in statements:
        module_order.setdefault(statement.module, len(module_order))
    early_keys = set(early) or {(f"{index.package}.{module}", name) for module, name in CONFIG_RECORDS}
    for position, statement in enumerate(statements):
        if any((statement.module, name) in early_keys for name in statement.names):
            rank[position] = 0

    # Needed-at-definition-time edges: eager uses, and everything a function used eagerly
    # (a decorator, a call at import) reads, since its body then runs at import too.
    def needed_now(position: int, all_uses: bool) -> list[int]:
        found = []
        for dep in dependencies(index, statements[position]):
            if dep.target is None or not (all_uses or dep.eager):
                continue
            target = sid.get((dep.target.module, dep.target.index))
            if target is not None and target != position:
                found.append(target)
        return found

    work = list(range(len(statements)))
    runs_at_import: set[int] = set()
    while work:
        position = work.pop()
        for target in needed_now(position, position in runs_at_import):
            called = statements[target].kind == "function" and target not in runs_at_import
            if called:
                runs_at_import.add(target)
            if rank[target] > rank[position] or called:
                rank[target] = min(rank[target], rank[position])
                work.append(target)
    order = sorted(
        range(len(statements)),
        key=lambda p: (rank[p], module_order[statements[p].module], statements[p].index),
    )
    return [Placed(SECTIONS[rank[p]], statements[p]) for p in order]


# --------------------------------------------------------------------------- figures

LAYOUT_GOALS = {"first_model_line": 600, "first_model_code_cell": 8}


@dataclass(frozen=True)
class Layout:
    """Where a reader meets the model and main() in an emitted script and notebook (1-based)."""

    first_model_line: int | None  # line of the script's first model definition
    first_model_code_cell: int | None  # position of the first model cell among the code cells
    main_line: int | None  # line of `def main(`
    support_banner_line: int | None

    def problems(self) -> list[str]:
        """The goals of issue 13 A.3 this layout misses (empty when all hold)."""
        found = []
        line, cell = self.first_model_line, self.first_model_code_cell
        if line is None or line > LAYOUT_GOALS["first_model_line"]:
            found.append(f"first model definition at line {line} (goal: within {LAYOUT_GOALS['first_model_line']})")
        if cell is None or cell > LAYOUT_GOALS["first_model_code_cell"]:
            found.append(f"first model code cell {cell} (goal: among the first {LAYOUT_GOALS['first_model_code_cell']})")
        if self.main_line is None or self.support_banner_line is None or self.main_line > self.support_banner_line:
            found.append(f"main() at line {self.main_line}, support banner at line {self.support_banner_line} (goal: main first)")
        return found


def _is_model_path(path: str) -> bool:
    """A `components/models/x.py` marker path -> whether its definitions are model-section ones."""
    parts = path.strip().removesuffix(".py").split("/")
    return len(parts) > 1 and section_of_module(".".join(parts), parts[0]) == "model"


def layout(script: str, notebook: str | None = None) -> Layout:
    """The `Layout` figures of an emitted script (and its notebook's JSON text)."""
    import ast
    import json

    markers = [(number, line.removeprefix("# %% ")) for number, line in enumerate(script.splitlines(), 1) if line.startswith("# %% ")]
    first_model = main_line = None
    for node in ast.parse(script).body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        line = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        if node.name == "main" and main_line is None:
            main_line = node.lineno
        path = next((p for number, p in reversed(markers) if number < line), "")
        if first_model is None and _is_model_path(path):
            first_model = line
    banner = next((n for n, line in enumerate(script.splitlines(), 1) if line.startswith(SUPPORT_BANNER)), None)
    first_cell = None
    if notebook is not None:
        heading, position = "", 0
        for cell in json.loads(notebook)["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "markdown":
                heading = source
            elif cell["cell_type"] == "code":
                position += 1
                if first_cell is None and heading.startswith("### `") and _is_model_path(heading[5:].split("`")[0]):
                    first_cell = position
    return Layout(first_model, first_cell, main_line, banner)
