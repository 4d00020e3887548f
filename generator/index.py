"""Static index of the component catalog: what every module defines, imports and uses.

The catalog is never imported (``sigmae-gen build`` must work without torch): each file
is analysed by generator/analysis.py, and the index ties the files together (components
with their schemas, every top-level definition, the import table, `resolve_name` through
imports and re-exports).

The per-file analysis depends only on the file's bytes and its module name, so it is
cached by content hash in one snapshot pickle (``<root>/.sigmae-cache``). A warm build
parses nothing, re-hashes only files whose stat changed, and unpickles a module's full
analysis only when a later stage asks about it: the index of a catalog with hundreds of
unrelated modules costs little more than one with dozens.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import pickle
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from generator.analysis import (  # CatalogError is re-exported: the error type of the whole pipeline
    CatalogError,
    ImportBinding,
    ModuleAnalysis,
    Registration,
    TopLevel,
    analyze_module,
    with_descriptions,
)
from generator.cache import content_key, default_cache_dir, load_pickle, store_pickle
from generator.ir import Component, Definition, DefinitionKey, Param
from generator.write import GENERATED_MARK

# Cached analyses depend on the analysis rules and records: the sources' own hash keys the
# cache, so an edited generator never reuses records written by an older one.
ANALYSIS_VERSION = content_key(
    *(Path(__file__).with_name(name).read_bytes() for name in ("index.py", "analysis.py", "ir.py"))
)[:16]


@dataclass(frozen=True)
class ModuleInfo:
    """One catalog file: its module name, where it is, its docstring and content hash."""

    name: str
    path: Path  # relative to the catalog root, e.g. components/models/blocks.py
    docstring: str | None
    sha256: str
    is_package: bool = False
    lines: int = 0


@dataclass(frozen=True, eq=False)
class CatalogIndex:
    """The whole catalog, read statically. ``definitions``, ``analyses``, ``statements`` and
    ``imports`` are read-only mappings that load a module's facts on first access;
    iterating them follows the catalog's file order."""

    root: Path  # folder that contains the package folder
    package: str  # "components"
    modules: dict[str, ModuleInfo]
    definitions: Mapping[DefinitionKey, Definition]  # every top-level binding, imports included
    components: dict[tuple[str, str], Component]  # (kind, registered name)
    analyses: Mapping[str, ModuleAnalysis] = field(default_factory=dict)
    statements: Mapping[DefinitionKey, TopLevel] = field(default_factory=dict)  # bound name -> statement
    imports: Mapping[DefinitionKey, ImportBinding] = field(default_factory=dict)  # bound name -> import
    memo: dict = field(default_factory=dict, repr=False)  # derived facts other stages memoise here

    def component(self, kind: str, name: str) -> Component:
        """The component registered as ``name`` for ``kind``; unknown -> CatalogError with hints."""
        found = self.components.get((kind, name))
        if found is not None:
            return found
        kinds = sorted({k for k, _ in self.components})
        if kind not in kinds:
            raise CatalogError(
                f"no {kind!r} components in the catalog under {self.root / self.package}; "
                f"known kinds: {', '.join(kinds) or '(none)'}"
            )
        known = sorted(n for k, n in self.components if k == kind)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CatalogError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}")

    def components_of(self, kind: str) -> list[Component]:
        """Registered components of ``kind``, sorted by name."""
        return sorted((c for (k, _), c in self.components.items() if k == kind), key=lambda c: c.name)

    def definitions_in(self, module: str) -> list[Definition]:
        """Top-level definitions of one module, in source order, loading only that module.

        Prefer this to filtering ``definitions``: iterating that loads every module.
        """
        analysis = self.analyses.get(module)
        if analysis is None:
            return []
        found = [self.definitions[(module, b.local)] for b in analysis.imports]
        found += [self.definitions[(module, n)] for s in analysis.statements for n in s.names]
        return sorted(found, key=lambda d: d.lineno)  # stable: `a, b = ...` keeps a before b

    def loaded_modules(self) -> tuple[str, ...]:
        """Modules whose analyses some stage has read so far (every module, for an eager index):
        what a result computed from this index can depend on, beyond the summaries."""
        facts = getattr(self.analyses, "_facts", None)
        return tuple(facts.loaded) if facts is not None else tuple(self.modules)

    def is_catalog_module(self, module: str) -> bool:
        return module == self.package or module.startswith(self.package + ".")

    def location(self, module: str, lineno: int) -> str:
        """``components/models/blocks.py:42``."""
        return f"{self.modules[module].path.as_posix()}:{lineno}"


# --------------------------------------------------------------------------- the index


def module_name_for(relative: str | Path) -> str:
    """components/models/__init__.py -> components.models; components/losses.py -> components.losses."""
    parts = str(relative)[: -len(".py")].replace(os.sep, "/").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _catalog_files(root: Path, package: str) -> list[str]:
    """Posix paths, relative to ``root``, of the package's modules, sorted (os.walk: ~5x rglob)."""
    base = root / package
    if not (base / "__init__.py").is_file():
        raise CatalogError(f"{base}: not a catalog package (no __init__.py); pass the folder that contains it")
    files = []
    for folder, dirs, names in os.walk(base):
        dirs[:] = [d for d in dirs if d.isidentifier() and d != "__pycache__"]  # importable packages only
        prefix = os.path.relpath(folder, root).replace(os.sep, "/")
        for name in names:
            if name.endswith(".py") and name[:-3].isidentifier():
                files.append(f"{prefix}/{name}")
    return sorted(files)


def _is_generated(data: bytes) -> bool:
    """A script or test module a build wrote (its header says so) is output, never catalog code."""
    return GENERATED_MARK in data[:512].lower()


class ComponentEntry(NamedTuple):
    """What the index needs eagerly about one registration (the rest loads on demand)."""

    registration: Registration
    qualname: str
    lineno: int
    params: tuple[Param, ...] | None  # None: inherited, looked up through the bases
    doc: str


class ModuleSummary(NamedTuple):
    """The part of a module's analysis every build needs, kept small so it loads fast."""

    module: str
    path: str
    sha256: str
    docstring: str | None
    lines: int
    components: tuple[ComponentEntry, ...]


def _summary(analysis: ModuleAnalysis) -> ModuleSummary:
    entries = tuple(
        ComponentEntry(reg, statement.names[0], statement.lineno, statement.params, statement.doc)
        for statement in analysis.statements
        for reg in statement.registrations
    )
    return ModuleSummary(analysis.module, analysis.path, analysis.sha256, analysis.docstring, analysis.lines, entries)


class _ModuleFacts:
    """Per-module analyses, unpickled the first time anything asks about that module.

    A warm build touches a few dozen modules; a catalog may hold hundreds. Keeping the
    others as pickled bytes is what keeps warm builds flat as the catalog grows.
    """

    def __init__(self, order: list[str], pending: dict[str, bytes | ModuleAnalysis]) -> None:
        self.order = order
        self.pending = pending
        self.loaded: dict[str, tuple[ModuleAnalysis, dict, dict, dict]] = {}

    def get(self, module: str) -> tuple[ModuleAnalysis, dict, dict, dict] | None:
        found = self.loaded.get(module)
        if found is None:
            item = self.pending.pop(module, None)
            if item is None:
                return None
            analysis = pickle.loads(item) if isinstance(item, bytes) else item
            found = self.loaded[module] = _module_maps(analysis)
        return found


def _module_maps(analysis: ModuleAnalysis) -> tuple[ModuleAnalysis, dict, dict, dict]:
    name = analysis.module
    definitions: dict[DefinitionKey, Definition] = {}
    statements: dict[DefinitionKey, TopLevel] = {}
    imports: dict[DefinitionKey, ImportBinding] = {}
    bound = {b.local for b in analysis.imports} | {n for s in analysis.statements for n in s.names}
    for binding in analysis.imports:
        imports[(name, binding.local)] = binding
        definitions[(name, binding.local)] = Definition(name, binding.local, "import", binding.lineno, frozenset())
    for statement in analysis.statements:
        uses = frozenset(u.name for u in statement.uses if u.name in bound)
        for bound_name in statement.names:
            statements[(name, bound_name)] = statement
            definitions[(name, bound_name)] = Definition(name, bound_name, statement.kind, statement.lineno, uses)
    return analysis, definitions, statements, imports


_MISSING = object()


class _LazyView(Mapping):
    """A read-only mapping over one kind of per-module fact, loading modules on demand.

    Keys are module names (``slot`` 0) or ``(module, name)`` pairs; iteration follows the
    catalog's file order, whatever was loaded first, so output stays deterministic.
    """

    def __init__(self, facts: _ModuleFacts, slot: int) -> None:
        self._facts = facts
        self._slot = slot

    def __getitem__(self, key):
        module = key if self._slot == 0 else key[0]
        found = self._facts.loaded.get(module) or self._facts.get(module)
        if found is None:
            raise KeyError(key)
        if self._slot == 0:
            return found[0]
        return found[self._slot][key]

    def get(self, key, default=None):
        # Mapping.get goes through __getitem__ and an exception on every miss: too slow for
        # the resolver, which asks tens of thousands of times per build.
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __iter__(self):
        for module in self._facts.order:
            found = self._facts.get(module)
            if found is None:
                continue
            if self._slot == 0:
                yield module
            else:
                yield from found[self._slot]

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"<lazy catalog view of {len(self._facts.order)} modules>"


# A file whose stat (size, mtime, ctime, inode) matches the snapshot's record is not read
# again, as git's index does. Only records older than this margin are trusted, so a write
# within the file system's timestamp granularity is still caught by hashing ("racy" files).
_RACY_MARGIN_NS = 2_000_000_000


def _stat_signature(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def build_index(root: Path, package: str = "components", *, cache_dir: Path | None = None) -> CatalogIndex:
    """Index every module of ``root/package`` without importing it.

    Per-file analyses are cached by content hash under ``cache_dir`` (default
    ``<root>/.sigmae-cache``): a warm call parses nothing, re-hashes only files whose stat
    changed, and unpickles only the modules a later stage asks about.
    """
    root = Path(root).resolve()
    cache_dir = default_cache_dir(root) if cache_dir is None else Path(cache_dir)
    snapshot_path = cache_dir / f"index-{package}-v{ANALYSIS_VERSION}.pkl"
    snapshot = load_pickle(snapshot_path)
    if not (isinstance(snapshot, dict) and snapshot.keys() == {"entries", "stats", "written_ns"}):
        snapshot = {"entries": {}, "stats": {}, "written_ns": 0}
    cached: dict[str, tuple[ModuleSummary, bytes]] = snapshot["entries"]
    trusted_before = snapshot["written_ns"] - _RACY_MARGIN_NS
    fresh: dict[str, tuple[ModuleSummary, bytes]] = {}
    stats: dict[str, tuple[tuple[int, int, int, int], str]] = {}
    summaries: list[ModuleSummary] = []
    pending: dict[str, bytes | ModuleAnalysis] = {}
    python = sys.version.split()[0]
    refresh = False
    for relative in _catalog_files(root, package):
        full = os.path.join(root, relative)
        module = module_name_for(relative)
        signature = _stat_signature(full)
        recorded = snapshot["stats"].get(relative)
        data = None
        if recorded is not None and recorded[0] == signature and signature[2] < trusted_before:
            key = recorded[1]
        else:
            # Racy but unchanged: a fresh snapshot will trust it next time.
            refresh = refresh or (recorded is not None and recorded[0] == signature)
            with open(full, "rb") as handle:
                data = handle.read()
            if _is_generated(data):  # never recorded, so it is read (and skipped) each time
                continue
            key = content_key(ANALYSIS_VERSION, python, module, relative, data)
        entry = cached.get(key)
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], ModuleSummary):
            summary, blob = entry
            pending[module] = blob
        else:
            if data is None:
                with open(full, "rb") as handle:
                    data = handle.read()
                key = content_key(ANALYSIS_VERSION, python, module, relative, data)
            try:
                text = data.decode("utf-8-sig")  # a BOM is legal Python source
            except UnicodeDecodeError as exc:
                raise CatalogError(f"{relative}: not UTF-8 ({exc.reason}); save it as UTF-8") from None
            analysis = analyze_module(text, module, relative, package)
            # The file's own bytes (a BOM included), as the provenance hash reads them.
            analysis = dataclasses.replace(analysis, sha256=hashlib.sha256(data).hexdigest())
            summary = _summary(analysis)
            pending[module] = analysis
            entry = (summary, pickle.dumps(analysis, protocol=pickle.HIGHEST_PROTOCOL))
        fresh[key] = entry
        stats[relative] = (signature, key)
        summaries.append(summary)
    if refresh or fresh.keys() != cached.keys() or stats != snapshot["stats"]:
        # Only this catalog's current files are kept: the snapshot never grows without bound.
        store_pickle(snapshot_path, {"entries": fresh, "stats": stats, "written_ns": time.time_ns()})
        for stale in cache_dir.glob(f"index-{package}-v*.pkl"):
            if stale != snapshot_path:  # written by an older generator: never read again
                try:
                    stale.unlink()
                except OSError:  # a read-only or shared cache: leave it, it is only disk space
                    pass
    return _assemble(root, package, summaries, pending)


def _assemble(
    root: Path, package: str, summaries: list[ModuleSummary], pending: dict[str, bytes | ModuleAnalysis]
) -> CatalogIndex:
    modules: dict[str, ModuleInfo] = {}
    for summary in summaries:
        path = Path(summary.path)
        modules[summary.module] = ModuleInfo(
            summary.module, path, summary.docstring, summary.sha256, path.name == "__init__.py", summary.lines
        )
    facts = _ModuleFacts([s.module for s in summaries], pending)
    index = CatalogIndex(
        root,
        package,
        modules,
        _LazyView(facts, 1),  # type: ignore[arg-type]
        {},
        _LazyView(facts, 0),  # type: ignore[arg-type]
        _LazyView(facts, 2),  # type: ignore[arg-type]
        _LazyView(facts, 3),  # type: ignore[arg-type]
    )
    components: dict[tuple[str, str], Component] = {}
    for summary in summaries:
        for entry in summary.components:
            reg = entry.registration
            where = f"{summary.path}:{reg.lineno}"
            previous = components.get((reg.kind, reg.name))
            if previous is not None:
                raise CatalogError(
                    f"{where}: {reg.kind} {reg.name!r} is already registered by {previous.qualname} "
                    f"({previous.path.as_posix()}:{previous.lineno}); choose another name"
                )
            params = entry.params
            if params is None:
                statement = index.statements[(summary.module, entry.qualname)]
                params = _inherited_params(index, summary.module, statement, set())
                # The subclass's own `Args:` entries describe what it inherits, where it has them.
                params = None if params is None else with_descriptions(params, entry.doc, keep=True)
            components[(reg.kind, reg.name)] = Component(
                kind=reg.kind,
                name=reg.name,
                version=reg.version,
                module=summary.module,
                qualname=entry.qualname,
                path=modules[summary.module].path,
                lineno=entry.lineno,
                params=params or (),
                doc=entry.doc,
            )
    index.components.update(dict(sorted(components.items())))
    return index


def resolve_name(
    index: CatalogIndex, module: str, name: str, *, _seen: frozenset[DefinitionKey] = frozenset()
) -> tuple[str, object, DefinitionKey]:
    """Follow ``name`` as bound in ``module`` through catalog imports and re-exports.

    Returns ``(kind, target, key)``: ``("statement", TopLevel, defining key)``,
    ``("module", module name, key)`` for a catalog module bound to a name,
    ``("external", ImportBinding, key)`` or ``("unbound", None, key)`` (builtin or undefined).
    """
    key = (module, name)
    if key in _seen:
        raise CatalogError(
            f"{index.modules[module].path.as_posix()}: import cycle while resolving {name!r}; "
            "import it from the module that defines it"
        )
    statement = index.statements.get(key)
    if statement is not None:
        return "statement", statement, key
    binding = index.imports.get(key)
    if binding is None:
        if module in index.modules and f"{module}.{name}" in index.modules:
            return "module", f"{module}.{name}", key
        return "unbound", None, key
    if not index.is_catalog_module(binding.module):
        return "external", binding, key
    if binding.attr is None:
        if not binding.aliased:
            raise CatalogError(
                f"{index.location(module, binding.lineno)}: `import {binding.module}` binds the package name; "
                f"write `from {binding.module} import <Name>` (components/README.md §1)"
            )
        if binding.module not in index.modules:
            raise CatalogError(
                f"{index.location(module, binding.lineno)}: no catalog module {binding.module!r}; fix the import"
            )
        return "module", binding.module, key
    if binding.module not in index.modules:
        raise CatalogError(
            f"{index.location(module, binding.lineno)}: no catalog module {binding.module!r}; fix the import"
        )
    kind, target, final = resolve_name(index, binding.module, binding.attr, _seen=_seen | {key})
    if kind == "unbound":
        raise CatalogError(
            f"{index.location(module, binding.lineno)}: `from {binding.module} import {binding.attr}`: "
            f"{index.modules[binding.module].path.as_posix()} defines no {binding.attr!r}"
        )
    return kind, target, final


def _inherited_params(
    index: CatalogIndex, module: str, statement: TopLevel, seen: set[DefinitionKey]
) -> tuple[Param, ...] | None:
    """Constructor parameters a class inherits from its first catalog base that declares them."""
    for base in statement.bases:
        if not base.isidentifier() or (module, base) in seen:
            continue
        seen.add((module, base))
        try:
            kind, target, _ = resolve_name(index, module, base)
        except CatalogError:
            continue
        if kind != "statement" or not isinstance(target, TopLevel) or target.kind != "class":
            continue
        if target.params is not None:
            return target.params
        inherited = _inherited_params(index, target.module, target, seen)
        if inherited is not None:
            return inherited
    return None
