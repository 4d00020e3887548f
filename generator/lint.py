"""Checks of emitted code: it compiles, pyflakes finds nothing, and no definition is dead.

pyflakes (a test dependency: the generator itself never lints at build time) reports unused
imports, undefined names (annotations included, which ``typing.get_type_hints`` evaluates
when argparse is built from ``Config``) and the rest of its list. What it does not report is
what tree shaking must guarantee on top: every module-level definition is used somewhere in
the file. A use is a name that is read (``ast.Name`` in a load context), an entry of
``__all__``, or a name inside a quoted annotation; a string that merely looks like an
identifier (``{"optimizer": 0}``) is not a use of ``def optimizer()``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.line}: {self.message}"


def _target_names(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [name for element in node.elts for name in _target_names(element)]
    if isinstance(node, ast.Starred):
        return _target_names(node.value)
    return []


def module_definitions(tree: ast.Module) -> dict[str, int]:
    """Module-level names bound by defs, classes and assignments, with their first lines.

    Imports are pyflakes' to judge. Statements under a module-level ``if``/``try`` count as
    module level (``try: import x except ImportError: x = None``).
    """
    bound: dict[str, int] = {}

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.setdefault(node.name, node.lineno)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for name in _target_names(target):
                        bound.setdefault(name, node.lineno)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                for name in _target_names(node.target):
                    bound.setdefault(name, node.lineno)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(tree.body)
    return bound


def _dunder_all(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__"
            for target in node.targets
        ):
            if isinstance(node.value, (ast.List, ast.Tuple)):
                names |= {
                    element.value
                    for element in node.value.elts
                    if isinstance(element, ast.Constant)
                    and isinstance(element.value, str)
                }
    return names


def _annotation_nodes(tree: ast.Module) -> list[ast.expr]:
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.arg, ast.AnnAssign)) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            found.append(node.returns)
    return found


def used_names(tree: ast.Module) -> set[str]:
    """Names the module reads: loads, ``__all__`` entries, names in quoted annotations."""
    used = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Load, ast.Del))
    }
    used |= _dunder_all(tree)
    for annotation in _annotation_nodes(tree):
        for node in ast.walk(annotation):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                try:
                    inner = ast.parse(node.value, mode="eval")
                except SyntaxError:
                    continue
                used |= {n.id for n in ast.walk(inner) if isinstance(n, ast.Name)}
    return used


def pyflakes_problems(tree: ast.Module, filename: str) -> list[Problem]:
    """Everything pyflakes reports about the module."""
    try:
        from pyflakes.checker import Checker
    except ImportError:  # pragma: no cover - pyflakes is in the dev extra
        raise RuntimeError(
            "generator.lint needs pyflakes: pip install -e '.[dev]'"
        ) from None
    checker = Checker(tree, filename)
    return [
        Problem(message.lineno, message.message % message.message_args)
        for message in sorted(checker.messages, key=lambda m: (m.lineno, m.col))
    ]


def lint(
    source: str,
    filename: str = "<emitted>",
    *,
    entry_points: tuple[str, ...] = ("main",),
) -> list[Problem]:
    """Problems of an emitted module (empty when it is clean). Raises SyntaxError when it does not compile."""
    compile(source, filename, "exec", dont_inherit=True)
    tree = ast.parse(source, filename)
    problems = pyflakes_problems(tree, filename)
    used = used_names(tree)
    for name, line in sorted(module_definitions(tree).items(), key=lambda x: x[1]):
        if name in entry_points or name.startswith("__") or name.startswith("test_"):
            continue
        if name not in used:
            problems.append(Problem(line, f"{name!r} is defined but never used"))
    return sorted(problems, key=lambda problem: problem.line)
