"""Definition-level reachability over the catalog index, and `explain`.

From the chosen roots (components, recipes, the runtime) follow every module-level name a
definition reads (bodies, bases, decorators, defaults, annotations) through catalog
imports, module aliases (``import components.x as m`` + ``m.y``) and package re-exports.
The result lists the reached definitions in an order that executes: modules whose code
others need at definition time come first, and inside a module the source order is kept
(it already executes, or the catalog would not import).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Sequence

from generator.analysis import BUILTIN_NAMES, CatalogError, ImportBinding, TopLevel
from generator.index import CatalogIndex, resolve_name
from generator.ir import DefinitionKey, Reason, Resolution

if TYPE_CHECKING:
    from generator.spec import Spec

StatementId = tuple[str, int]  # (module, statement index)

# The runtime's entry points that the generated skeleton (Config, build_pipeline, main) calls.
RUNTIME_MODULE = "components.runtime"
RUNTIME_NAMES = ("Pipeline", "Step", "RunOptions", "run_pipeline")


def runtime_roots() -> tuple[DefinitionKey, ...]:
    return tuple((RUNTIME_MODULE, name) for name in RUNTIME_NAMES)


def spec_roots(spec: Spec) -> tuple[DefinitionKey, ...]:
    """Resolver roots of a spec: the runtime plus every chosen component, in a stable order."""
    roots = list(runtime_roots())
    for component in spec.components:
        if component.key not in roots:
            roots.append(component.key)
    return tuple(roots)


@dataclass(frozen=True)
class Dependency:
    """What one name read by a statement refers to once imports are followed."""

    name: str  # the name as written in the reading module
    attr: str | None  # `name.attr` where `name` is a catalog module alias
    lineno: int
    eager: bool
    target: TopLevel | None = None  # a catalog definition...
    target_key: DefinitionKey | None = None
    external: ImportBinding | None = None  # ...or a stdlib/torch import
    builtin: bool = False
    local_import: bool = False  # bound by `from components.x import name` inside a function
    context: str = ""  # innermost def/class around the reference, e.g. "Block.__init__"


def _sid(statement: TopLevel) -> StatementId:
    return (statement.module, statement.index)


def statement_key(statement: TopLevel) -> DefinitionKey:
    return (statement.module, statement.names[0])


def dependencies(index: CatalogIndex, statement: TopLevel) -> tuple[Dependency, ...]:
    """Every module-level name ``statement`` reads, resolved (memoised on the index)."""
    memo = index.memo.setdefault("dependencies", {})
    found = memo.get(_sid(statement))
    if found is None:
        found = memo[_sid(statement)] = tuple(_dependencies(index, statement))
    return found


def _dependencies(index: CatalogIndex, statement: TopLevel) -> list[Dependency]:
    module = statement.module
    attrs_by_base: dict[str, list] = {}
    for attr_use in statement.attr_uses:
        attrs_by_base.setdefault(attr_use.base, []).append(attr_use)
    found: list[Dependency] = []
    for use in statement.uses:
        kind, target, key = resolve_name(index, module, use.name)
        if kind == "statement":
            assert isinstance(target, TopLevel)
            found.append(
                Dependency(use.name, None, use.lineno, use.eager, target=target, target_key=key, context=use.context)
            )
        elif kind == "external":
            assert isinstance(target, ImportBinding)
            found.append(Dependency(use.name, None, use.lineno, use.eager, external=target))
        elif kind == "module":
            assert isinstance(target, str)
            if use.bare:
                raise CatalogError(
                    f"{index.location(module, use.lineno)}: the catalog module {target} is used as a value; the inliner can only "
                    f"follow `{use.name}.<name>`: import the names you need instead"
                )
            for attr_use in attrs_by_base.get(use.name, []):
                akind, atarget, akey = resolve_name(index, target, attr_use.attr)
                awhere = index.location(module, attr_use.lineno) if akind not in ("statement", "external") else ""
                if akind == "statement":
                    assert isinstance(atarget, TopLevel)
                    found.append(
                        Dependency(
                            use.name,
                            attr_use.attr,
                            attr_use.lineno,
                            attr_use.eager,
                            target=atarget,
                            target_key=akey,
                            context=attr_use.context,
                        )
                    )
                elif akind == "external":
                    assert isinstance(atarget, ImportBinding)
                    found.append(Dependency(use.name, attr_use.attr, attr_use.lineno, attr_use.eager, external=atarget))
                elif akind == "module":
                    raise CatalogError(
                        f"{awhere}: `{use.name}.{attr_use.attr}` is a module; import names from it directly"
                    )
                else:
                    raise CatalogError(
                        f"{awhere}: `{use.name}.{attr_use.attr}`: {index.modules[target].path.as_posix()} "
                        f"defines no {attr_use.attr!r}"
                    )
        elif use.name in BUILTIN_NAMES or (use.name.startswith("__") and use.name.endswith("__")):
            found.append(Dependency(use.name, None, use.lineno, use.eager, builtin=True))
        else:
            raise CatalogError(
                f"{index.location(module, use.lineno)}: name {use.name!r} is not defined in {index.modules[module].path.as_posix()}; "
                "define or import it at module level"
            )
    for binding in statement.local_imports:
        where = index.location(module, binding.lineno)
        if binding.module not in index.modules:
            raise CatalogError(f"{where}: no catalog module {binding.module!r}; fix the import")
        assert binding.attr is not None
        kind, target, key = resolve_name(index, binding.module, binding.attr)
        if kind == "statement":
            assert isinstance(target, TopLevel)
            found.append(
                Dependency(
                    binding.local,
                    None,
                    binding.lineno,
                    False,
                    target=target,
                    target_key=key,
                    local_import=True,
                    context="",
                )
            )
        elif kind == "external":
            assert isinstance(target, ImportBinding)
            found.append(Dependency(binding.local, None, binding.lineno, False, external=target, local_import=True))
        else:
            raise CatalogError(
                f"{where}: `from {binding.module} import {binding.attr}`: "
                f"{index.modules[binding.module].path.as_posix()} defines no {binding.attr!r} (or it is a module)"
            )
    found.sort(key=lambda d: (d.lineno, d.name, d.attr or ""))
    return found


def _root_statement(index: CatalogIndex, key: DefinitionKey) -> tuple[TopLevel, DefinitionKey]:
    module, name = key
    if module not in index.modules:
        raise CatalogError(f"root {module}.{name}: no catalog module {module!r} under {index.root / index.package}")
    kind, target, final = resolve_name(index, module, name)
    if kind != "statement":
        raise CatalogError(f"root {module}.{name}: {index.modules[module].path.as_posix()} defines no {name!r}")
    assert isinstance(target, TopLevel)
    return target, final


def resolve(
    index: CatalogIndex, roots: Sequence[DefinitionKey], *, provided: Collection[DefinitionKey] = ()
) -> Resolution:
    """Reach every definition the roots need; ``provided`` ones are reached but not followed.

    ``provided`` definitions come from elsewhere (the test suite imports the script's
    classes), so what only they need is not emitted again.
    """
    provided_keys = set(provided)
    reasons: dict[DefinitionKey, Reason] = {}
    reached: dict[StatementId, TopLevel] = {}
    provided_hits: dict[DefinitionKey, None] = {}
    queue: deque[TopLevel] = deque()

    def reach(
        statement: TopLevel, key: DefinitionKey, needed_by: DefinitionKey | None, location: str, context: str = ""
    ) -> None:
        if key not in reasons:
            reasons[key] = Reason(key, needed_by, location, context)
            for name in statement.names:  # `a, b = ...`: one statement, every name explained
                other = (statement.module, name)
                reasons.setdefault(other, Reason(other, needed_by, location, context))
        if key in provided_keys:
            provided_hits.setdefault(key, None)
            return
        if _sid(statement) not in reached:
            reached[_sid(statement)] = statement
            queue.append(statement)

    for root in roots:
        statement, key = _root_statement(index, root)
        reach(statement, key, None, index.location(statement.module, statement.lineno))
    externals: dict[str, None] = {}
    while queue:
        statement = queue.popleft()
        needer = statement_key(statement)
        for dep in dependencies(index, statement):
            if dep.target is not None and dep.target_key is not None:
                if _sid(dep.target) != _sid(statement):
                    location = index.location(statement.module, dep.lineno)
                    reach(dep.target, dep.target_key, needer, location, dep.context or needer[1])
            elif dep.external is not None:
                externals.setdefault(dep.external.statement(), None)

    ordered = _order(index, list(reached.values()))
    order: list[DefinitionKey] = []
    for statement in ordered:
        order.extend((statement.module, name) for name in statement.names)
    touched = {s.module for s in ordered}
    emitted = set(order)
    excluded = sum(
        1
        for module in touched
        for s in index.analyses[module].statements
        for name in s.names
        if (module, name) not in emitted
    )
    return Resolution(
        order=tuple(order),
        reasons=reasons,
        excluded=excluded,
        external_imports=tuple(sorted(externals)),
        provided=tuple(provided_hits),
    )


def _order(index: CatalogIndex, statements: list[TopLevel]) -> list[TopLevel]:
    """Dependencies first, grouped by module, source order inside a module."""
    by_module: dict[str, list[TopLevel]] = {}
    for statement in statements:
        by_module.setdefault(statement.module, []).append(statement)
    reached_ids = {_sid(s) for s in statements}
    # Module graph: eager edges must be honoured; lazy ones (function bodies, annotations) if possible.
    edges: dict[str, dict[str, bool]] = {m: {} for m in by_module}
    for statement in statements:
        for dep in dependencies(index, statement):
            target = dep.target
            if target is None or target.module == statement.module or _sid(target) not in reached_ids:
                continue
            out = edges[statement.module]
            out[target.module] = out.get(target.module, False) or dep.eager
    # Depth-first post-order from the modules in discovery order gives readable
    # "layers, then models, then recipes"; cycles are cut where they are met.
    postorder: list[str] = []
    state: dict[str, int] = {}

    def visit(module: str) -> None:
        state[module] = 1
        for target in edges[module]:
            if target not in state:
                visit(target)
        state[module] = 2
        postorder.append(module)

    for statement in statements:
        if statement.module not in state:
            visit(statement.module)
    rank = {m: i for i, m in enumerate(postorder)}
    placed: list[str] = []
    done: set[str] = set()
    remaining = sorted(by_module, key=rank.__getitem__)
    while remaining:
        pick = next((m for m in remaining if all(t in done for t in edges[m])), None)
        if pick is None:  # a cycle: cut it at a lazy edge
            pick = next((m for m in remaining if all(t in done for t, eager in edges[m].items() if eager)), None)
        if pick is None:
            cycle = " -> ".join(index.modules[m].path.as_posix() for m in remaining)
            raise CatalogError(
                f"definitions in {cycle} need each other at import time (base classes, decorators, "
                "default values or constants); move one of them so the modules form no cycle"
            )
        placed.append(pick)
        done.add(pick)
        remaining.remove(pick)
    return [s for module in placed for s in sorted(by_module[module], key=lambda s: s.index)]


def explain(index: CatalogIndex, resolution: Resolution) -> str:
    """Why each emitted definition is in, as reason chains, and how much was left out."""
    roots_by_key = {c.key: f"{c.kind} {c.name!r}" for c in index.components.values()}
    lines: list[str] = []
    current_module = None
    emitted = [key for key in resolution.order if key in resolution.reasons] + [
        key for key in resolution.provided if key in resolution.reasons
    ]
    for key in emitted:
        module = key[0]
        if module != current_module:
            current_module = module
            lines.append(index.modules[module].path.as_posix())
        chain = [key[1]]
        seen = {key}
        reason = resolution.reasons[key]
        while reason.needed_by is not None and reason.needed_by not in seen:
            chain.append(f"{reason.context or reason.needed_by[1]} ({reason.location})")
            seen.add(reason.needed_by)
            reason = resolution.reasons[reason.needed_by]
        root = roots_by_key.get(reason.definition, "root")
        chain.append(f"{root} ({reason.location})")
        suffix = "  [provided: imported, not emitted]" if key in resolution.provided else ""
        lines.append("  " + " ← ".join(chain) + suffix)
    touched = len({key[0] for key in resolution.order})
    lines.append("")
    lines.append(
        f"{len(resolution.order)} definitions emitted from {touched} modules; "
        f"{resolution.excluded} definitions of those modules left out."
    )
    if resolution.external_imports:
        lines.append(f"{len(resolution.external_imports)} imports from outside the catalog:")
        lines.extend(f"  {statement}" for statement in resolution.external_imports)
    return "\n".join(lines) + "\n"
