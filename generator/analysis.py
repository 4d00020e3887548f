"""Per-file analysis of catalog modules: what each top-level statement binds, reads and registers.

Pure functions of a file's text (no imports of the catalog, no torch): the index caches
their results by content hash. The standard ``ast`` module does the work: on the real
catalog a libcst parse plus ``code_for_node`` cost 85 % of a cold index (0.95 s of 1.1 s
for 3,600 lines), while ast gives the same facts (names, scopes, line numbers) and each
top-level statement's exact text is a slice of whole source lines. The scope walk follows
Python's rules (class bodies do not enclose methods, comprehensions have their own scope,
``global``/``nonlocal``), and tells eager uses (bases, decorators, defaults, class bodies:
evaluated at definition time) from lazy ones (function bodies, annotations).
"""

from __future__ import annotations

import ast
import builtins
import copy
import dataclasses
import hashlib
import inspect
import re
from dataclasses import dataclass
from typing import Iterable, Literal, NamedTuple

from generator.cache import content_key
from generator.ir import REGISTRY_KINDS, Param

BUILTIN_NAMES: frozenset[str] = frozenset(dir(builtins))


class CatalogError(Exception):
    """The catalog cannot be indexed or inlined: the message names file:line and the fix."""


# --------------------------------------------------------------------------- records
# The small, numerous records are NamedTuples: a warm build unpickles thousands of them,
# and tuples load several times faster than dataclass instances.


class NameUse(NamedTuple):
    """A module-level name read by a top-level statement (first occurrence)."""

    name: str
    lineno: int
    eager: bool  # evaluated when the statement runs (bases, decorators, defaults, class body)
    bare: bool = True  # read as a value somewhere, not only as the base of `name.attr`
    context: str = ""  # innermost def/class around the first occurrence, e.g. "Block.__init__"


class AttrUse(NamedTuple):
    """``base.attr`` where ``base`` is a module-level name (needed for ``import m`` + ``m.y``)."""

    base: str
    attr: str
    lineno: int
    eager: bool
    context: str = ""


class ImportBinding(NamedTuple):
    """One name bound by a module-level import statement."""

    local: str  # the name bound in the importing module
    module: str  # absolute module: `from module import attr` / `import module [as local]`
    attr: str | None  # None for `import module [as local]`
    lineno: int
    aliased: bool = False  # `import a.b as local` (binds a.b) rather than `import a.b` (binds a)

    @property
    def identity(self) -> str:
        """What the name refers to, so two spellings of one import merge."""
        if self.attr is not None:
            return f"{self.module}.{self.attr}"
        return self.module if self.aliased or "." not in self.module else self.module.split(".")[0]

    def statement(self, local: str | None = None) -> str:
        """Canonical import statement binding this name as ``local`` (default: as written)."""
        local = local or self.local
        if self.attr is not None:
            return f"from {self.module} import {self.attr}" + (f" as {local}" if local != self.attr else "")
        if not self.aliased:
            if local != self.local:
                raise CatalogError(f"cannot rename `import {self.module}`; write `import {self.module} as name`")
            return f"import {self.module}"
        return f"import {self.module}" + (f" as {local}" if local != self.module else "")


class Registration(NamedTuple):
    """``@<kind>_registry.register("name", version="1.0")`` read from a decorator."""

    registry: str  # "model_registry"
    kind: str  # "model"
    name: str
    version: str
    lineno: int
    end_lineno: int = 0  # last line of the decorator expression


@dataclass(frozen=True)
class TopLevel:
    """One top-level statement that binds names: the unit the inliner emits."""

    module: str
    index: int  # position among the module's statements (source order)
    kind: Literal["class", "function", "constant"]
    names: tuple[str, ...]
    lineno: int  # line of `def`/`class` or of the assignment
    code: str  # exact source text, leading comments included
    first_line: int  # line number of the first line of `code` in the file
    uses: tuple[NameUse, ...]  # global names read (builtins included), by first line
    attr_uses: tuple[AttrUse, ...]
    registrations: tuple[Registration, ...] = ()
    params: tuple[Param, ...] | None = None  # functions; classes with __init__ or dataclass fields
    bases: tuple[str, ...] = ()  # base-class expressions as source text
    doc: str = ""
    local_imports: tuple[ImportBinding, ...] = ()  # `from components.x import y` inside functions

    @property
    def sha256(self) -> str:
        return content_key(self.code)


@dataclass(frozen=True)
class ModuleAnalysis:
    """Everything the generator needs to know about one catalog file."""

    module: str
    path: str  # posix path relative to the catalog root, e.g. "components/models/blocks.py"
    sha256: str
    docstring: str | None
    statements: tuple[TopLevel, ...]
    imports: tuple[ImportBinding, ...]
    future_annotations: bool
    lines: int


# --------------------------------------------------------------------------- scope analysis


class _Scope:
    __slots__ = ("kind", "parent", "bound", "declared_global", "loads", "attr_loads", "qualname")

    def __init__(self, kind: str, parent: _Scope | None, name: str = "") -> None:
        self.kind = kind  # "module" | "function" | "class" | "comprehension"
        self.parent = parent
        outer = parent.qualname if parent is not None else ""
        # Where a reference sits, for `explain`: "MacaronBlock.__init__" (lambdas and
        # comprehensions report their enclosing function).
        self.qualname = f"{outer}.{name}" if outer and name else name or outer
        self.bound: set[str] = set()
        self.declared_global: set[str] = set()
        self.loads: list[tuple[str, int, bool, bool, str]] = []  # name, line, eager, bare, context
        self.attr_loads: list[tuple[str, str, int, bool, str]] = []

    def refers_to_module(self, name: str) -> bool:
        """Whether ``name`` read in this scope means the module-level binding (Python rules)."""
        if name in self.declared_global:
            return True
        if self.kind != "module" and name in self.bound:
            return False
        scope = self.parent
        while scope is not None:
            if scope.kind == "module":
                return True
            # Class bodies are not enclosing scopes for the functions defined inside them.
            if scope.kind != "class":
                if name in scope.declared_global:
                    return True
                if name in scope.bound:
                    return False
            scope = scope.parent
        return True


class _UsesCollector:
    """Collects the module-level names one top-level statement reads, with Python's scoping."""

    def __init__(self, path: str, package: str, future_annotations: bool) -> None:
        self.path = path
        self.package = package
        self.future_annotations = future_annotations
        self.scopes: list[_Scope] = []
        self.line_offset = 0
        self.local_imports: list[ImportBinding] = []
        # While a def's decorators, defaults and annotations are read (in the enclosing scope),
        # `explain` should still say they belong to that def: "Block.__init__".
        self.signature: str | None = None
        # generator/rename.py: every node that may spell a module-level name, with its scope
        # (None: not recorded; names inside string annotations never are).
        self.nodes: list[tuple[_Scope, ast.AST, str]] | None = None
        self.in_string = False

    def _record(self, scope: _Scope, node: ast.AST, kind: str) -> None:
        if self.nodes is not None and not self.in_string:
            self.nodes.append((scope, node, kind))

    # -- entry point
    def collect(self, stmt: ast.stmt) -> tuple[tuple[NameUse, ...], tuple[AttrUse, ...]]:
        module = _Scope("module", None)
        self.scopes = [module]
        self.local_imports = []
        self._stmt(stmt, module, eager=True)
        first: dict[str, NameUse] = {}
        attrs: dict[tuple[str, str], AttrUse] = {}
        for scope in self.scopes:
            for name, line, eager, bare, context in scope.loads:
                if not scope.refers_to_module(name):
                    continue
                seen = first.get(name)
                if seen is not None:
                    if seen.lineno <= line:
                        context = seen.context
                    line, eager, bare = min(line, seen.lineno), eager or seen.eager, bare or seen.bare
                first[name] = NameUse(name, line, eager, bare, context)
            for base, attr, line, eager, context in scope.attr_loads:
                if not scope.refers_to_module(base):
                    continue
                seen_attr = attrs.get((base, attr))
                if seen_attr is not None:
                    if seen_attr.lineno <= line:
                        context = seen_attr.context
                    line, eager = min(line, seen_attr.lineno), eager or seen_attr.eager
                attrs[(base, attr)] = AttrUse(base, attr, line, eager, context)
        uses = tuple(sorted(first.values(), key=lambda u: (u.lineno, u.name)))
        attr_uses = tuple(sorted(attrs.values(), key=lambda u: (u.lineno, u.base, u.attr)))
        return uses, attr_uses

    def _new(self, kind: str, parent: _Scope, name: str = "") -> _Scope:
        scope = _Scope(kind, parent, name)
        self.scopes.append(scope)
        return scope

    def _line(self, node: ast.AST) -> int:
        return getattr(node, "lineno", 0) + self.line_offset

    # -- statements
    def _body(self, stmts: Iterable[ast.stmt], scope: _Scope, eager: bool) -> None:
        for stmt in stmts:
            self._stmt(stmt, scope, eager)

    def _stmt(self, node: ast.stmt, scope: _Scope, eager: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = self._new("function", scope, node.name)
            saved, self.signature = self.signature, inner.qualname
            for deco in node.decorator_list:
                self._expr(deco, scope, eager)
            self._arguments(node.args, scope, inner, eager)
            if node.returns is not None:
                self._annotation(node.returns, scope, eager)
            self.signature = saved
            scope.bound.add(node.name)
            self._record(scope, node, "def")
            self._body(node.body, inner, eager=False)
        elif isinstance(node, ast.ClassDef):
            for deco in node.decorator_list:
                self._expr(deco, scope, eager)
            for base in node.bases:
                self._expr(base, scope, eager)
            for keyword in node.keywords:
                self._expr(keyword.value, scope, eager)
            scope.bound.add(node.name)
            self._record(scope, node, "def")
            inner = self._new("class", scope, node.name)
            self._body(node.body, inner, eager)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                target = module if module is not None else alias.name
                if alias.name == "*":
                    raise CatalogError(f"{self.path}:{self._line(node)}: `import *` is not supported; import names")
                if (
                    scope.kind != "module"
                    and target
                    and (target == self.package or target.startswith(self.package + "."))
                ):
                    if module is None or node.level:
                        raise CatalogError(
                            f"{self.path}:{self._line(node)}: the inliner follows `from components.<module> "
                            f"import <Name>` inside functions, not `{ast.unparse(node)}`; import the names"
                        )
                    # The inliner deletes the import: the name it binds becomes the emitted global.
                    self.local_imports.append(
                        ImportBinding(alias.asname or alias.name, module, alias.name, self._line(node))
                    )
                    self._record(scope, node, "local_import")
                scope.bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            if isinstance(node, ast.Global):
                scope.declared_global.update(node.names)
                self._record(scope, node, "global")
            else:
                scope.bound.update(node.names)
        elif isinstance(node, ast.AnnAssign):
            if scope.kind == "function":  # annotations of local variables are never evaluated,
                for name in ast.walk(node.annotation):  # but a rename must still respell them
                    if isinstance(name, ast.Name):
                        self._record(scope, name, "name")
            else:
                self._annotation(node.annotation, scope, eager)
            if node.value is not None:
                self._expr(node.value, scope, eager)
            self._expr(node.target, scope, eager)
        elif isinstance(node, ast.ExceptHandler):
            if node.type is not None:
                self._expr(node.type, scope, eager)
            if node.name:
                scope.bound.add(node.name)
            self._body(node.body, scope, eager)
        else:
            for child in _children(node):
                if isinstance(child, ast.stmt):
                    self._stmt(child, scope, eager)
                elif isinstance(child, ast.ExceptHandler):
                    self._stmt(child, scope, eager)  # type: ignore[arg-type]
                elif isinstance(child, ast.expr):
                    self._expr(child, scope, eager)
                else:
                    self._misc(child, scope, eager)

    def _misc(self, node: ast.AST, scope: _Scope, eager: bool) -> None:
        """withitem, match_case, patterns, keywords, comprehension pieces..."""
        if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            scope.bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            scope.bound.add(node.rest)
        for child in _children(node):
            if isinstance(child, ast.stmt):
                self._stmt(child, scope, eager)
            elif isinstance(child, ast.expr):
                self._expr(child, scope, eager)
            else:
                self._misc(child, scope, eager)

    def _arguments(self, args: ast.arguments, outer: _Scope, inner: _Scope, eager: bool) -> None:
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self._expr(default, outer, eager)
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
        every += [a for a in (args.vararg, args.kwarg) if a is not None]
        for arg in every:
            if arg.annotation is not None:
                self._annotation(arg.annotation, outer, eager)
            inner.bound.add(arg.arg)

    def _annotation(self, node: ast.expr, scope: _Scope, eager: bool) -> None:
        # Under `from __future__ import annotations` annotations are strings: never evaluated.
        eager = eager and not self.future_annotations
        self._forward_references(node, scope)
        self._expr(node, scope, eager)

    def _forward_references(self, node: ast.AST, scope: _Scope) -> None:
        """Names inside string annotations ("Block"), but not Literal["tiny", "base"] values."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self._string_annotation(node, scope)
            return
        if isinstance(node, ast.Subscript):
            head = node.value
            name = head.id if isinstance(head, ast.Name) else getattr(head, "attr", "")
            if name == "Literal":
                self._forward_references(head, scope)
                return
            if name == "Annotated":
                self._forward_references(head, scope)
                first = node.slice.elts[0] if isinstance(node.slice, ast.Tuple) else node.slice
                self._forward_references(first, scope)
                return
        for child in _children(node):
            self._forward_references(child, scope)

    def _string_annotation(self, node: ast.Constant, scope: _Scope) -> None:
        try:
            parsed = ast.parse(node.value.strip(), mode="eval")
        except SyntaxError:
            return  # e.g. Literal["audio"]: a plain string, not a forward reference
        saved, saved_string = self.line_offset, self.in_string
        self.line_offset, self.in_string = saved + node.lineno - 1, True
        try:
            self._expr(parsed.body, scope, eager=False)
        finally:
            self.line_offset, self.in_string = saved, saved_string

    # -- expressions
    def _expr(self, node: ast.expr, scope: _Scope, eager: bool) -> None:
        if type(node) is ast.Constant:  # the commonest leaf: nothing to read
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load) or node.id in scope.declared_global:
                # A `global` write is a use too: renaming must rewrite it with the binding.
                scope.loads.append((node.id, self._line(node), eager, True, self.signature or scope.qualname))
            else:
                scope.bound.add(node.id)
            self._record(scope, node, "name")
            return
        if isinstance(node, ast.Attribute):
            value = node.value
            if isinstance(value, ast.Name) and isinstance(value.ctx, ast.Load):
                context = self.signature or scope.qualname
                scope.attr_loads.append((value.id, node.attr, self._line(node), eager, context))
                scope.loads.append((value.id, self._line(value), eager, False, context))
                self._record(scope, node, "attr")
            else:
                self._expr(value, scope, eager)
            return
        if isinstance(node, ast.Lambda):
            inner = self._new("function", scope)
            self._arguments(node.args, scope, inner, eager)
            self._expr(node.body, inner, eager=False)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            generators = node.generators
            # The first iterable is evaluated in the enclosing scope.
            self._expr(generators[0].iter, scope, eager)
            inner = self._new("comprehension", scope)
            for index, comp in enumerate(generators):
                if index:
                    self._expr(comp.iter, inner, eager)
                self._expr(comp.target, inner, eager)
                for cond in comp.ifs:
                    self._expr(cond, inner, eager)
            if isinstance(node, ast.DictComp):
                self._expr(node.key, inner, eager)
                self._expr(node.value, inner, eager)
            else:
                self._expr(node.elt, inner, eager)
            return
        if isinstance(node, ast.NamedExpr):
            target_scope = scope
            while target_scope.kind == "comprehension" and target_scope.parent is not None:
                target_scope = target_scope.parent
            target_scope.bound.add(node.target.id)
            self._expr(node.value, scope, eager)
            return
        expr, misc = self._expr, self._misc
        for field in _fields(type(node)):  # ast.iter_child_nodes' nodes and order, leaves skipped
            value = getattr(node, field, None)
            for child in value if type(value) is list else (value,):
                if isinstance(child, ast.expr):
                    if type(child) is not ast.Constant:
                        expr(child, scope, eager)
                elif isinstance(child, ast.AST) and not isinstance(child, _LEAVES):
                    misc(child, scope, eager)


# Nodes that hold no names and no other nodes (expression contexts, operators): the walk skips
# them, as visiting them would do nothing, and the fields that only ever hold them.
_LEAVES = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_LEAF_FIELDS = frozenset({"ctx", "op", "ops"})
_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple(f for f in cls._fields if f not in _LEAF_FIELDS)  # type: ignore[attr-defined]
    return found


def _children(node: ast.AST) -> list[ast.AST]:
    """``ast.iter_child_nodes`` (same nodes, same order) without the leaves, as one list."""
    found = []
    for field in _fields(type(node)):
        value = getattr(node, field, None)
        for child in value if type(value) is list else (value,):
            if isinstance(child, ast.AST) and not isinstance(child, _LEAVES):
                found.append(child)
    return found


# --------------------------------------------------------------------------- docstrings

ARGS_HEADERS = ("Args:", "Arguments:")
_ARG_ENTRY = re.compile(r"\*{0,2}(?P<name>[A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:(?:\s+(?P<text>.*))?$")


def docstring_args(doc: str | None) -> dict[str, str]:
    """Parameter name -> its description, on one line, from a Google-style ``Args:`` section.

    An entry is ``name: text`` (or ``name (type): text``) at the section's first indentation;
    deeper-indented lines continue it; the section ends at the first line indented no deeper
    than its header. components/flags.py reads emitted docstrings by the same rule.
    """
    found: dict[str, str] = {}
    header: int | None = None
    entry: int | None = None
    current: str | None = None
    for line in inspect.cleandoc(doc or "").splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if header is None:
            header = indent if stripped in ARGS_HEADERS else None
            continue
        if not stripped:
            continue
        if indent <= header:
            break
        entry = indent if entry is None else entry
        match = _ARG_ENTRY.match(stripped) if indent == entry else None
        if match is not None:
            current = match["name"]
            found[current] = (match["text"] or "").strip()
        elif current is not None and indent > entry:
            found[current] = f"{found[current]} {stripped}".strip()
    return found


def with_descriptions(params: tuple[Param, ...], doc: str | None, *, keep: bool = False) -> tuple[Param, ...]:
    """``params`` with each one's ``Args:`` entry of ``doc`` (``keep``: entries ``doc`` lacks stay)."""
    described = docstring_args(doc)
    return tuple(
        dataclasses.replace(p, description=described.get(p.name, p.description if keep else "")) for p in params
    )


# --------------------------------------------------------------------------- per-file analysis


class _Source:
    """Source text with fast (line, col) -> text slicing (ast offsets are UTF-8 bytes)."""

    def __init__(self, text: str) -> None:
        self.text_lines = text.splitlines()
        self.lines = [line.encode("utf-8") for line in text.splitlines(keepends=True)]

    def statement_text(self, node: ast.stmt, previous_end: int) -> tuple[str, int]:
        """A top-level statement's full lines, with the comments that belong to it.

        Comments directly above (no blank line between) and comment lines indented into its
        body after its last line travel with it. Top-level statements own whole lines
        (``;`` is rejected), so line slicing is exact; it is also ~10x cheaper than
        re-generating the text from a libcst tree.
        """
        lines = self.text_lines
        decorators = getattr(node, "decorator_list", [])
        start = min([node.lineno, *(d.lineno for d in decorators)]) - 1
        end = node.end_lineno or node.lineno  # exclusive index of the line after it
        while start - 1 >= previous_end and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scan = end
            while scan < len(lines) and (not lines[scan].strip() or lines[scan][:1] in " \t"):
                if lines[scan].strip():
                    if not lines[scan].lstrip().startswith("#"):
                        break
                    end = scan + 1
                scan += 1
        return "\n".join(lines[start:end]) + "\n", start + 1

    def segment(self, node: ast.AST) -> str:
        start, end = node.lineno - 1, node.end_lineno - 1  # type: ignore[attr-defined]
        if start == end:
            return self.lines[start][node.col_offset : node.end_col_offset].decode("utf-8")  # type: ignore[attr-defined]
        parts = [self.lines[start][node.col_offset :]]
        parts += self.lines[start + 1 : end]
        parts.append(self.lines[end][: node.end_col_offset])  # type: ignore[attr-defined]
        return b"".join(parts).decode("utf-8")


def _literal(node: ast.expr, what: str, where: str) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise CatalogError(
        f"{where}: the registry decorator's {what} must be a string literal (the generator reads it statically)"
    )


def _registration(deco: ast.expr, where_path: str) -> Registration | None:
    """The registration a decorator makes, or None when it is not a registry decorator."""
    if not (
        isinstance(deco, ast.Call)
        and isinstance(deco.func, ast.Attribute)
        and deco.func.attr == "register"
        and isinstance(deco.func.value, ast.Name)
        and deco.func.value.id in REGISTRY_KINDS
    ):
        return None
    registry = deco.func.value.id
    where = f"{where_path}:{deco.lineno}"
    name = version = None
    if len(deco.args) > 2 or any(isinstance(a, ast.Starred) for a in deco.args):
        raise CatalogError(f'{where}: write the decorator as @{registry}.register("name", version="1.0")')
    if deco.args:
        name = _literal(deco.args[0], "name", where)
    if len(deco.args) > 1:
        version = _literal(deco.args[1], "version", where)
    for keyword in deco.keywords:
        if keyword.arg == "name":
            name = _literal(keyword.value, "name", where)
        elif keyword.arg == "version":
            version = _literal(keyword.value, "version", where)
        else:
            raise CatalogError(f"{where}: unexpected registry decorator argument {keyword.arg!r}")
    if not name:
        raise CatalogError(f'{where}: the registry decorator needs a name: @{registry}.register("name")')
    return Registration(
        registry, REGISTRY_KINDS[registry], name, version or "1.0", deco.lineno, deco.end_lineno or deco.lineno
    )


def _function_params(args: ast.arguments, source: _Source, skip_first: bool) -> tuple[Param, ...]:
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    n_posonly = len(args.posonlyargs)
    params: list[Param] = []
    for index, (arg, default) in enumerate(zip(positional, defaults)):
        if index < n_posonly or (skip_first and index == 0):
            continue  # positional-only parameters are injected at run time, not set by specs
        params.append(_param(arg, default, source))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        params.append(_param(arg, default, source))
    return tuple(params)


def _param(arg: ast.arg, default: ast.expr | None, source: _Source) -> Param:
    annotation = None if arg.annotation is None else source.segment(arg.annotation)
    return Param(arg.arg, annotation, None if default is None else source.segment(default), arg.lineno)


def _is_dataclass_decorator(deco: ast.expr) -> bool:
    target = deco.func if isinstance(deco, ast.Call) else deco
    return (isinstance(target, ast.Name) and target.id == "dataclass") or (
        isinstance(target, ast.Attribute) and target.attr == "dataclass"
    )


def _class_params(node: ast.ClassDef, source: _Source) -> tuple[Param, ...] | None:
    for stmt in node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == "__init__":
            return _function_params(stmt.args, source, skip_first=True)
    if not any(_is_dataclass_decorator(d) for d in node.decorator_list):
        return None  # inherited: build_index looks through the catalog bases
    params = []
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        annotation = source.segment(stmt.annotation)
        if annotation.startswith(("ClassVar", "typing.ClassVar")):
            continue
        default = None
        if stmt.value is not None:
            default = source.segment(stmt.value)
            value = stmt.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", "")) == "field":
                plain = [k.value for k in value.keywords if k.arg == "default"]
                default = source.segment(plain[0]) if plain else default
        params.append(Param(stmt.target.id, annotation, default, stmt.lineno))
    return tuple(params)


def _assigned_names(target: ast.expr, where: str) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for elt in target.elts for name in _assigned_names(elt, where)]
    if isinstance(target, ast.Starred):
        return _assigned_names(target.value, where)
    raise CatalogError(
        f"{where}: module-level assignment to `{ast.unparse(target)}` has a side effect; "
        "catalog modules may only bind names at module level (move it into a function)"
    )


def _is_type_checking_block(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or node.orelse:
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_bindings(node: ast.Import | ast.ImportFrom, where: str) -> list[ImportBinding]:
    bindings = []
    if isinstance(node, ast.ImportFrom):
        if node.level:
            raise CatalogError(f"{where}: relative import; write `from components.<module> import <Name>`")
        assert node.module is not None
        for alias in node.names:
            if alias.name == "*":
                raise CatalogError(f"{where}: `from {node.module} import *` is not supported; import names")
            bindings.append(ImportBinding(alias.asname or alias.name, node.module, alias.name, node.lineno))
    else:
        for alias in node.names:
            if alias.asname:
                bindings.append(ImportBinding(alias.asname, alias.name, None, node.lineno, aliased=True))
            else:
                bindings.append(ImportBinding(alias.name.split(".")[0], alias.name, None, node.lineno))
    return bindings


def analyze_module(text: str, module: str, path: str, package: str = "components") -> ModuleAnalysis:
    """Analyse one catalog file's source. Pure: depends only on its arguments."""
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as exc:
        raise CatalogError(f"{path}:{exc.lineno}: syntax error: {exc.msg}; fix the file") from None
    source = _Source(text)
    future = any(
        isinstance(s, ast.ImportFrom) and s.module == "__future__" and any(a.name == "annotations" for a in s.names)
        for s in tree.body
    )
    collector = _UsesCollector(path, package, future)
    docstring = ast.get_docstring(tree)
    statements: list[TopLevel] = []
    imports: list[ImportBinding] = []
    for first, second in zip(tree.body, tree.body[1:]):
        if second.lineno == first.end_lineno:
            raise CatalogError(f"{path}:{second.lineno}: several statements on one line (`;`); write one per line")
    previous_end = 0
    for index, node in enumerate(tree.body):
        where = f"{path}:{node.lineno}"
        if index == 0 and docstring is not None and isinstance(node, ast.Expr):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.extend(_import_bindings(node, where))
            continue
        if _is_type_checking_block(node):
            for inner in node.body:  # type: ignore[attr-defined]
                if not isinstance(inner, (ast.Import, ast.ImportFrom)):
                    raise CatalogError(f"{path}:{inner.lineno}: only imports may appear under `if TYPE_CHECKING:`")
                imports.extend(_import_bindings(inner, f"{path}:{inner.lineno}"))
            continue
        if isinstance(node, ast.Pass) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        ):
            continue  # a bare string between definitions documents, it binds nothing
        statement = _top_level(node, module, index, source, collector, path, previous_end)
        if statement is not None:
            statements.append(statement)
        previous_end = node.end_lineno or node.lineno
    _check_unique(statements, imports, path)
    return ModuleAnalysis(
        module=module,
        path=path,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        docstring=docstring,
        statements=tuple(statements),
        imports=tuple(imports),
        future_annotations=future,
        lines=text.count("\n") + (0 if text.endswith("\n") or not text else 1),
    )


def _top_level(
    node: ast.stmt,
    module: str,
    index: int,
    source: _Source,
    collector: _UsesCollector,
    path: str,
    previous_end: int,
) -> TopLevel | None:
    where = f"{path}:{node.lineno}"
    registrations: tuple[Registration, ...] = ()
    params: tuple[Param, ...] | None = None
    bases: tuple[str, ...] = ()
    doc = ""
    analysed: ast.stmt = node
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        kind: Literal["class", "function", "constant"] = "class" if isinstance(node, ast.ClassDef) else "function"
        names: tuple[str, ...] = (node.name,)
        found = [_registration(d, path) for d in node.decorator_list]
        registrations = tuple(r for r in found if r is not None)
        if registrations:
            # Registry decorators are dropped by the inliner: they must not pull in the registry.
            kept = [d for d, r in zip(node.decorator_list, found) if r is None]
            analysed = _replace_decorators(node, kept)
        doc = ast.get_docstring(node) or ""
        if isinstance(node, ast.ClassDef):
            params = _class_params(node, source)
            bases = tuple(source.segment(b) for b in node.bases)
        else:
            params = _function_params(node.args, source, skip_first=False)
        if params is not None:
            params = with_descriptions(params, doc)
    elif isinstance(node, ast.Assign):
        kind = "constant"
        names = tuple(n for t in node.targets for n in _assigned_names(t, where))
    elif isinstance(node, ast.AnnAssign):
        if node.value is None:
            return None  # `x: int` binds nothing
        kind = "constant"
        names = tuple(_assigned_names(node.target, where))
    else:
        what = type(node).__name__
        raise CatalogError(
            f"{where}: unsupported module-level statement ({what}); catalog modules hold only imports, "
            "constants, def and class at module level (components/README.md §1): move it into a function"
        )
    if names == ("__all__",):
        return None
    uses, attr_uses = collector.collect(analysed)
    code, first_line = source.statement_text(node, previous_end)
    return TopLevel(
        module=module,
        index=index,
        kind=kind,
        names=names,
        lineno=node.lineno,
        code=code,
        first_line=first_line,
        uses=tuple(u for u in uses if u.name not in names),
        attr_uses=attr_uses,
        registrations=registrations,
        params=params,
        bases=bases,
        doc=doc,
        local_imports=tuple(collector.local_imports),
    )


def _replace_decorators(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, kept: list[ast.expr]):
    clone = copy.copy(node)
    clone.decorator_list = kept
    return clone


def _check_unique(statements: list[TopLevel], imports: list[ImportBinding], path: str) -> None:
    seen: dict[str, int] = {}
    for name, line in [(n, s.lineno) for s in statements for n in s.names] + [(b.local, b.lineno) for b in imports]:
        if name in seen and seen[name] != line:
            raise CatalogError(
                f"{path}:{line}: {name!r} is bound again (first at line {seen[name]}); the generator needs one "
                "module-level binding per name: rename one of them"
            )
        seen.setdefault(name, line)

