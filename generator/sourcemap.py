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


def _skeleton(script: str, spec: Spec) -> list[dict[str, Any]]:
    """Ranges of the generated code in the script: header, imports, classes, entry, guard."""
    sections = {section_class_name(choice.section): choice.section for choice in spec.sections}
    parts: list[dict[str, Any]] = []
    body = ast.parse(script).body
    docstring = body[0] if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) else None
    parts.append({"part": "header", "lines": [1, docstring.end_lineno if docstring else 1]})
    imports = [node for node in body if isinstance(node, (ast.Import, ast.ImportFrom))]
    if imports:
        parts.append({"part": "imports", "lines": [imports[0].lineno, imports[-1].end_lineno]})
    for node in body:
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        if isinstance(node, ast.ClassDef) and (node.name == "Config" or node.name in sections):
            entry: dict[str, Any] = {"part": "config", "name": node.name, "lines": [first, node.end_lineno], "_anchor": node.lineno}
            if node.name in sections:
                entry["section"] = sections[node.name]
            parts.append(entry)
        elif isinstance(node, ast.FunctionDef) and node.name in ENTRY_NAMES:
            parts.append({"part": "entry", "name": node.name, "lines": [first, node.end_lineno], "_anchor": node.lineno})
        elif isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            parts.append({"part": "guard", "lines": [first, node.end_lineno]})
    return parts


def _notebook_cells(notebook: str) -> list[list[str]]:
    """Each cell's source as lines (markdown cells included, so indices are cell positions)."""
    return ["".join(cell["source"]).splitlines() for cell in json.loads(notebook)["cells"]]


def _in_notebook(cells: list[list[str]], anchor: str, length: int, before: int = 0) -> dict[str, Any] | None:
    """Cell and lines of a range whose line ``before`` lines after its first one is ``anchor``."""
    for position, lines in enumerate(cells):
        if anchor in lines:
            start = lines.index(anchor) + 1 - before
            return {"cell": position, "lines": [start, start + length - 1]}
    return None


def render_source_map(
    spec: Spec,
    program: InlinedProgram,
    *,
    script_name: str,
    script: str,
    notebook_name: str | None,
    notebook: str | None,
    spec_ref: str,
    spec_hash: str,
    catalog_hashes: dict[str, str],
) -> str:
    """The map as JSON text. ``catalog_hashes``: sha256 of each used catalog file's bytes."""
    lines = script.splitlines()
    cells = _notebook_cells(notebook) if notebook is not None else None
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
            entry["notebook"] = _in_notebook(cells, definition.comment, definition.lines)
        entries.append(entry)
    entries.sort(key=lambda e: e["script_lines"][0])
    skeleton = _skeleton(script, spec)
    if cells is not None:
        for part in skeleton:
            if part["part"] in ("config", "entry"):
                first, last = part["lines"]
                anchor = part["_anchor"]
                part["notebook"] = _in_notebook(cells, lines[anchor - 1], last - first + 1, anchor - first)
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
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
