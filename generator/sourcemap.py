"""The source map of a build: `<name>.map.json` beside the emitted script.

For every emitted catalog definition it records where it stands in the script (and in the
notebook: cell index and lines), where it came from (catalog file, symbol, source lines, short
hash of its source) and the renames the inliner applied (emitted spelling -> catalog
spelling); for the generated skeleton (header, imports, Config and the section classes,
build_pipeline()/main(), the `__main__` guard) it records the ranges, tagged as skeleton.
`sigmae-gen diff` (generator/diff.py) reads it to turn edits back into catalog patches.

Deterministic: sorted keys, lines 1-based and inclusive, paths relative to the project root,
no machine paths; the same build gives the same bytes.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

import generator
from generator.ir import EmittedDefinition, InlinedProgram
from generator.spec import Spec, section_class_name

MAP_VERSION = 1
ENTRY_NAMES = ("build_pipeline", "main")


def map_name(name: str) -> str:
    return f"{name}.map.json"


class SourceMapError(Exception):
    """The emitted text and the inliner's records disagree (a bug in the tool)."""


@dataclass(frozen=True)
class _Found:
    definition: EmittedDefinition
    first: int  # 1-based line of its provenance comment
    last: int


def _locate(lines: Sequence[str], definitions: Sequence[EmittedDefinition], where: str) -> list[_Found]:
    """Each definition's range in ``lines``, found by its provenance comment (which is unique)."""
    at: dict[str, list[int]] = {}
    for number, line in enumerate(lines, 1):
        if line.startswith("# ") and "::" in line and "  (sha256:" in line:
            at.setdefault(line, []).append(number)
    found = []
    for definition in definitions:
        numbers = at.get(definition.comment, [])
        if len(numbers) != 1:
            raise SourceMapError(f"{where}: provenance line {definition.comment!r} found {len(numbers)} times")
        found.append(_Found(definition, numbers[0], numbers[0] + definition.lines - 1))
    return found


def _definitions(program: InlinedProgram) -> list[EmittedDefinition]:
    return [definition for chunk in program.chunks for definition in chunk.definitions]


GENERATED_MARK = "(generated from the spec)"  # ends the `# %%` line of each generated chunk (render.ScriptParts)


def _skeleton(lines: Sequence[str], spec: Spec) -> list[dict[str, Any]]:
    """Ranges of the generated code in the script: header, imports, classes, entry, guard.

    Only the generated chunks are parsed (a parse of the whole script would cost more than the
    rest of a warm build); the header and imports are found by their fixed layout."""
    sections = {section_class_name(choice.section): choice.section for choice in spec.sections}
    parts: list[dict[str, Any]] = []
    future = next((n for n, line in enumerate(lines, 1) if line == "from __future__ import annotations"), None)
    if future is not None:
        parts.append({"part": "header", "lines": [1, max(1, future - 2)]})
        last = future
        for number in range(future + 1, len(lines) + 1):
            line = lines[number - 1]
            if line.startswith(("import ", "from ")):
                last = number
            elif line and not line.startswith(("    ", ")")):
                break
        parts.append({"part": "imports", "lines": [future, last]})
    for number, line in enumerate(lines, 1):
        if not (line.startswith("# %% ") and line.endswith(GENERATED_MARK)):
            continue
        end = number
        while end < len(lines) and not lines[end].startswith(("# %% ", "# ====", "if __name__")):
            end += 1
        for node in ast.parse("\n".join(lines[number:end])).body:
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) + number
            span = [first, node.end_lineno + number]
            if isinstance(node, ast.ClassDef) and (node.name == "Config" or node.name in sections):
                entry: dict[str, Any] = {"part": "config", "name": node.name, "lines": span, "_anchor": node.lineno + number}
                if node.name in sections:
                    entry["section"] = sections[node.name]
                parts.append(entry)
            elif isinstance(node, ast.FunctionDef) and node.name in ENTRY_NAMES:
                parts.append({"part": "entry", "name": node.name, "lines": span, "_anchor": node.lineno + number})
    guard = next((n for n in range(len(lines), 0, -1) if lines[n - 1].startswith("if __name__ ==")), None)
    if guard is not None:
        parts.append({"part": "guard", "lines": [guard, len(lines)]})
    return parts


class _NotebookLines:
    """Where each line of the notebook's cells stands: line text -> (cell, 1-based line), first one wins.

    ``cells``: each cell's source as the notebook stores it, a list of lines that keep their
    newlines (the document the build just made, not its JSON text read back)."""

    def __init__(self, cells: Sequence[Sequence[str]]) -> None:
        self.at: dict[str, tuple[int, int]] = {}
        for position, source in enumerate(cells):
            for number, line in enumerate(source, 1):
                if line.startswith(("# ", "class ", "def ")):  # the only anchors asked for
                    self.at.setdefault(line.splitlines()[0], (position, number))  # without its line end

    def range(self, anchor: str, length: int, before: int = 0) -> dict[str, Any] | None:
        """Cell and lines of a range of ``length`` lines whose line ``before`` lines after its first is ``anchor``."""
        found = self.at.get(anchor)
        if found is None:
            return None
        start = found[1] - before
        return {"cell": found[0], "lines": [start, start + length - 1]}


def render_source_map(
    spec: Spec,
    program: InlinedProgram,
    *,
    script_name: str,
    script: str,
    notebook_name: str | None,
    notebook: str | None,
    notebook_cells: Sequence[Sequence[str]] | None,
    spec_ref: str,
    spec_hash: str,
    catalog_hashes: dict[str, str],
) -> str:
    """The map as JSON text. ``notebook``: the notebook's text (for its hash) and
    ``notebook_cells`` its cells' sources, lists of lines (both None without a notebook).
    ``catalog_hashes``: sha256 of each used catalog file's bytes."""
    lines = script.splitlines()
    cells = _NotebookLines(notebook_cells) if notebook_cells is not None else None
    entries = []
    for found in _locate(lines, _definitions(program), script_name):
        definition = found.definition
        entry: dict[str, Any] = {
            "catalog": definition.path,
            "symbol": ",".join(definition.names),
            "source_lines": list(definition.source_lines),
            "sha256": definition.sha256,
            "renames": dict(definition.renames),
            "script_lines": [found.first, found.last],
        }
        if cells is not None:
            entry["notebook"] = cells.range(definition.comment, definition.lines)
        entries.append(entry)
    entries.sort(key=lambda e: e["script_lines"][0])
    skeleton = _skeleton(lines, spec)
    if cells is not None:
        for part in skeleton:
            if part["part"] in ("config", "entry"):
                first, last = part["lines"]
                anchor = part["_anchor"]
                part["notebook"] = cells.range(lines[anchor - 1], last - first + 1, anchor - first)
    for part in skeleton:
        part.pop("_anchor", None)
    document = {
        "_generated_by": f"generated by sigmae-gen {generator.__version__} from spec {spec.name}; read by `sigmae-gen diff`",
        "version": MAP_VERSION,
        "spec": spec_ref,
        "spec_name": spec.name,
        "sha256": spec_hash,
        "script": script_name,
        "script_sha256": hashlib.sha256(script.encode("utf-8")).hexdigest(),
        "notebook": notebook_name,
        "notebook_sha256": hashlib.sha256(notebook.encode("utf-8")).hexdigest() if notebook is not None else None,
        "catalog_files": {path: catalog_hashes[path] for path in sorted({e["catalog"] for e in entries})},
        "definitions": entries,
        "skeleton": skeleton,
    }
    return dump_map(document)


def dump_map(document: dict[str, Any]) -> str:
    """The map's canonical text: sorted keys, one top-level key and one list item per line
    (json's C encoder: an indented dump of a large map would cost more than the rest of a warm build)."""
    rows = []
    for key in sorted(document):
        value = document[key]
        if isinstance(value, list) and value:
            items = ",\n".join(" " + json.dumps(item, sort_keys=True, ensure_ascii=False) for item in value)
            rows.append(f"{json.dumps(key)}: [\n{items}\n]")
        else:
            rows.append(f"{json.dumps(key)}: {json.dumps(value, sort_keys=True, ensure_ascii=False)}")
    return "{\n" + ",\n".join(rows) + "\n}\n"
