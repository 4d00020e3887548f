"""Scope-aware renaming of one top-level definition, on the index's own scope analysis.

The inliner calls this only for the few definitions that need it (a name collision, a
``module.attr`` reference through ``import components.x as m``, or a catalog import inside
a function); everything else is emitted as written. Only references that resolve to the
module level are rewritten: locals, parameters, attributes and keyword names that happen
to share the name are left alone, and a local that would hide the new name is an error.
Which name means what is decided by generator/analysis.py's scope rules (the ones the index
and the resolver use), on ``ast`` positions; the text is edited in place, so everything else
in the definition stays as written (the inliner formats the result with black).
"""

from __future__ import annotations

import ast

from generator.analysis import CatalogError, _Scope, _UsesCollector


def rewrite_names(
    code: str,
    *,
    names: dict[str, str],
    attrs: dict[tuple[str, str], str],
    local_imports: dict[str, str],
    where: str,
    package: str = "components",
) -> str:
    """``code`` with module-level ``names`` renamed, ``alias.attr`` replaced and local imports gone.

    ``names``: old -> new for module-level names; ``attrs``: (module alias, attribute) -> new
    name; ``local_imports``: the local name a function-local ``from <package>.x import y``
    binds -> the emitted name (the import is deleted, or becomes ``y = new``).
    """
    tree = ast.parse(code)
    collector = _UsesCollector(where, package, future_annotations=False)
    collector.nodes = []
    for statement in tree.body:
        collector.collect(statement)
    text = _Text(code)
    removed: set[int] = set()
    for scope, node, kind in collector.nodes:
        if kind == "name" and isinstance(node, ast.Name):
            new = names.get(node.id)
            if new is not None and _means_module(scope, node.id):
                _check_free(scope, new, where)
                text.replace(node, new, old=node.id, where=where)
        elif kind == "global" and isinstance(node, ast.Global) and any(name in names for name in node.names):
            text.replace(node, "global " + ", ".join(names.get(name, name) for name in node.names), where=where)
        elif kind == "def" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            new = names.get(node.name)
            if new is not None and scope.kind == "module":
                text.replace_def_name(node, new)
        elif kind == "attr" and isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            new = attrs.get((node.value.id, node.attr))
            if new is not None and _means_module(scope, node.value.id):
                _check_free(scope, new, where)
                text.replace(node, new, where=where)
            else:  # `Foo.make()` of a renamed module-level `Foo`: the name part is renamed
                renamed = names.get(node.value.id)
                if renamed is not None and _means_module(scope, node.value.id):
                    _check_free(scope, renamed, where)
                    text.replace(node.value, renamed, old=node.value.id, where=where)
        elif kind == "local_import" and isinstance(node, ast.ImportFrom) and id(node) not in removed:
            removed.add(id(node))
            kept = [
                f"{local} = {local_imports[local]}"
                for alias in node.names
                for local in [alias.asname or alias.name]
                if local_imports.get(local, local) != local
            ]
            text.replace_statement(node, kept)
    for body in _bodies(tree):
        if body and all(id(statement) in removed for statement in body):
            text.replace_statement(body[0], ["pass"])  # its only statements were removed imports
    return text.result()


def _means_module(scope: _Scope, name: str) -> bool:
    """Whether ``name`` read in ``scope`` is the module-level binding (at module level: always)."""
    return scope.kind == "module" or scope.refers_to_module(name)


def _check_free(scope: _Scope, new: str, where: str) -> None:
    if not _means_module(scope, new):
        raise CatalogError(
            f"{where}: inlining needs the module-level name {new!r} here, but a local variable "
            f"of that name hides it; rename the local variable"
        )


def _bodies(tree: ast.AST):
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


class _Text:
    """Edits of a source text by ``ast`` positions (1-based lines, UTF-8 byte columns)."""

    def __init__(self, code: str) -> None:
        self.lines = code.splitlines(keepends=True)
        self.edits: dict[tuple[int, int], tuple[int, int, str]] = {}  # start -> (end, replacement)

    def _offset(self, lineno: int, col: int) -> tuple[int, int]:
        line = self.lines[lineno - 1]
        return lineno, len(line.encode("utf-8")[:col].decode("utf-8"))

    def replace(self, node: ast.AST, new: str, *, old: str | None = None, where: str = "") -> None:
        """The text of ``node`` becomes ``new`` (``old``: what that text must be)."""
        start = self._offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self._offset(node.end_lineno or node.lineno, node.end_col_offset or 0)  # type: ignore[attr-defined]
        if old is not None and self._span(*start, *end) != old:
            raise CatalogError(f"{where}: cannot locate {old!r} in the source to rename it (inside an f-string?)")
        self.edits[start] = (*end, new)

    def replace_def_name(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, new: str) -> None:
        line = self.lines[node.lineno - 1]
        _, start = self._offset(node.lineno, node.col_offset)
        keyword = "class" if isinstance(node, ast.ClassDef) else "def"
        at = line.index(keyword, start) + len(keyword)
        at += len(line[at:]) - len(line[at:].lstrip(" \t"))
        self.edits[(node.lineno, at)] = (node.lineno, at + len(node.name), new)

    def replace_statement(self, node: ast.stmt, lines: list[str]) -> None:
        """The whole lines of ``node`` become ``lines`` (at its indentation); none: they go."""
        indent = self.lines[node.lineno - 1][: self._offset(node.lineno, node.col_offset)[1]]
        last = node.end_lineno or node.lineno
        replacement = "".join(f"{indent}{line}\n" for line in lines)
        self.edits[(node.lineno, 0)] = (last, len(self.lines[last - 1]), replacement)

    def result(self) -> str:
        out: list[str] = []
        line, col = 1, 0
        for (start_line, start_col), (end_line, end_col, new) in sorted(self.edits.items()):
            if (start_line, start_col) < (line, col):
                continue  # inside an edit already made (e.g. a removed import)
            out.append(self._span(line, col, start_line, start_col))
            out.append(new)
            line, col = end_line, end_col
        out.append(self._span(line, col, len(self.lines), len(self.lines[-1]) if self.lines else 0))
        return "".join(out)

    def _span(self, line: int, col: int, end_line: int, end_col: int) -> str:
        if not self.lines:
            return ""
        if line == end_line:
            return self.lines[line - 1][col:end_col]
        parts = [self.lines[line - 1][col:], *self.lines[line : end_line - 1], self.lines[end_line - 1][:end_col]]
        return "".join(parts)
