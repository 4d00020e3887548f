"""A small pyflakes stand-in for emitted code: compiles, no unused imports or definitions, no undefined names.

pyflakes is not a dependency, and emitted files are simple (module-level definitions only),
so three checks cover what matters: every module-level import and definition is used
somewhere in the file (tree shaking left nothing dead), and every name a scope reads is
bound somewhere (tree shaking left nothing out). `symtable` gives the compiler's own view of
which names each scope reads from the module; annotations (strings under
`from __future__ import annotations`) are checked with `ast`.
"""

from __future__ import annotations

import ast
import builtins
import symtable
from dataclasses import dataclass

BUILTINS = frozenset(dir(builtins)) | {"__file__", "__name__", "__doc__", "__spec__", "__builtins__", "__loader__", "__package__"}


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.line}: {self.message}"


def _module_bindings(tree: ast.Module) -> dict[str, int]:
    """Module-level names bound by imports, defs, classes and assignments, with their lines."""
    bound: dict[str, int] = {}

    def targets(node: ast.expr) -> list[str]:
        if isinstance(node, ast.Name):
            return [node.id]
        if isinstance(node, (ast.Tuple, ast.List)):
            return [name for element in node.elts for name in targets(element)]
        if isinstance(node, ast.Starred):
            return targets(node.value)
        return []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name != "*" and not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                        bound.setdefault(alias.asname or alias.name.split(".")[0], node.lineno)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.setdefault(node.name, node.lineno)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for name in targets(target):
                        bound.setdefault(name, node.lineno)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                for name in targets(node.target):
                    bound.setdefault(name, node.lineno)
            elif isinstance(node, (ast.If, ast.Try)):  # `try: import x except ImportError: x = None`
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(tree.body)
    return bound


def _loaded_names(tree: ast.Module) -> set[str]:
    """Every name read anywhere, string annotations included, plus `__all__` entries."""
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Load, ast.Del)):
            loaded.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            loaded.add(node.value)  # `__all__` entries and quoted forward references
    for node in ast.walk(tree):
        annotation = getattr(node, "annotation", None) or getattr(node, "returns", None)
        for item in (annotation,) if annotation is not None else ():
            if isinstance(item, ast.Constant) and isinstance(item.value, str):
                try:
                    inner = ast.parse(item.value, mode="eval")
                except SyntaxError:
                    continue
                loaded |= {n.id for n in ast.walk(inner) if isinstance(n, ast.Name)}
    return loaded


def _undefined(table: symtable.SymbolTable, module_names: set[str], problems: list[Problem]) -> None:
    for symbol in table.get_symbols():
        name = symbol.get_name()
        if not symbol.is_referenced():
            continue
        reads_module = table.get_type() == "module" or symbol.is_global()
        if reads_module and not symbol.is_assigned() and name not in module_names and name not in BUILTINS:
            problems.append(Problem(table.get_lineno(), f"undefined name {name!r} (in {table.get_name()})"))
    for child in table.get_children():
        _undefined(child, module_names, problems)


def lint(source: str, filename: str = "<emitted>", *, entry_points: tuple[str, ...] = ("main",)) -> list[Problem]:
    """Problems of an emitted module (empty when it is clean). Raises SyntaxError when it does not compile."""
    compile(source, filename, "exec", dont_inherit=True)
    tree = ast.parse(source, filename)
    bound = _module_bindings(tree)
    loaded = _loaded_names(tree)
    problems: list[Problem] = []
    for name, line in sorted(bound.items(), key=lambda item: item[1]):
        if name in entry_points or name.startswith("__") or name.startswith("test_"):
            continue
        if name not in loaded:
            problems.append(Problem(line, f"{name!r} is bound but never used"))
    _undefined(symtable.symtable(source, filename, "exec"), set(bound), problems)
    # Annotations are not evaluated under `from __future__ import annotations`, but
    # typing.get_type_hints (argparse from Config) evaluates them: their names must exist too.
    for node in ast.walk(tree):
        for annotation in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if annotation is None:
                continue
            for name in (n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)):
                if name not in bound and name not in BUILTINS and not _is_local_type(tree, name):
                    problems.append(Problem(getattr(node, "lineno", 0), f"annotation name {name!r} is undefined"))
    return problems


def _is_local_type(tree: ast.Module, name: str) -> bool:
    """Type parameters / names bound only inside functions (e.g. TYPE_CHECKING-free local aliases)."""
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name
        for node in ast.walk(tree)
    )
