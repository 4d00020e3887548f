"""The inliner: reached catalog definitions -> one flat, self-contained program.

Definitions are emitted in reader order (generator/sections.py: configuration records, model,
objective, data, recipes, support), grouped by source module inside each section, with their
comments and docstrings. Catalog imports disappear (the code they name is right there),
registry decorators are dropped, stdlib/torch imports are merged into one sorted block of
only what the emitted code uses, and names that would collide in the single namespace are
renamed with every reference rewritten (scope-aware, generator/rename.py). Each
emitted definition opens with a one-line provenance comment (catalog path, symbol, short hash
of its catalog source) and is recorded in its chunk's `definitions`: the build's source map
(generator/sourcemap.py) and `sigmae-gen diff` (generator/diff.py) start from them.

Most definitions need no rewriting: their catalog text, which is black-clean, is emitted as
it is. A renamed one goes to black only where a respelled line could change shape
(formatting.stays_black_clean), and renamed text is cached by content hash, so a warm build
neither parses nor formats catalog code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from generator.cache import TextCache, content_key, default_cache_dir
from generator.formatting import format_many, merge_imports, stays_black_clean
from generator.analysis import BUILTIN_NAMES, CatalogError, ImportBinding, TopLevel
from generator.index import CatalogIndex
from generator.ir import DefinitionKey, EmittedDefinition, InlinedProgram, ModuleChunk, Resolution
from generator.resolve import dependencies, resolve
from generator.sections import Placed, reading_order

# Cached output depends on this file's rules: its own hash is part of every cache key, so
# an edited inliner never reuses text produced by an older one.
INLINE_VERSION = content_key(
    *(
        Path(__file__).with_name(f).read_bytes()
        for f in ("inline.py", "rename.py", "resolve.py", "index.py", "analysis.py")
    )
)
_TEXT_CACHES: dict[Path, TextCache] = {}


@dataclass(frozen=True)
class _Rewrite:
    """What one statement needs changed; empty means its text is emitted as written."""

    names: tuple[tuple[str, str], ...]  # old -> new, for names bound at module level
    attrs: tuple[tuple[tuple[str, str], str], ...]  # (module alias, attr) -> new name
    drop_registry: bool
    local_imports: tuple[tuple[str, str], ...] = ()  # function-local catalog import: local -> new

    def respells(self) -> bool:
        """Whether the statement's text changes beyond dropped decorator lines (generator/rename.py)."""
        return bool(self.names or self.attrs or self.local_imports)


def inline(
    index: CatalogIndex,
    resolution: Resolution,
    *,
    reserved: Collection[str] = (),
    provided: Collection[DefinitionKey] | Mapping[DefinitionKey, str] = (),
    cache_dir: Path | None = None,
    early: Collection[DefinitionKey] = (),
) -> InlinedProgram:
    """Emit ``resolution`` as imports + one black-formatted chunk per source module.

    ``reserved``: names the surrounding template defines (``Config``, ``PIPELINE``, ``main``):
    catalog definitions with those names are renamed. ``provided``: definitions imported
    from elsewhere instead of emitted (what only they need is not emitted either); a
    mapping fixes the name each is imported under. ``names`` of the result maps every
    reached definition, provided ones included, to its name in the program. Chunks come in
    reader order (generator/sections.py); ``early``: definitions the template needs when its
    `Config` is defined (default: the catalog's `sections.CONFIG_RECORDS`).
    """
    cache_dir = default_cache_dir(index.root) if cache_dir is None else Path(cache_dir)
    fixed_provided = dict(provided) if isinstance(provided, Mapping) else {}
    if set(provided) & set(resolution.order):  # resolved without them: drop what only they need
        roots = [key for key, reason in resolution.reasons.items() if reason.needed_by is None]
        resolution = resolve(index, roots, provided=sorted(set(provided) | set(resolution.provided)))
    statements = _ordered_statements(index, resolution)

    naming = _Naming(index, set(reserved), fixed_provided)
    externals = naming.externals(statements)
    names = naming.definitions(statements, resolution.provided)

    rewrites = {(s.module, s.index): _rewrite_for(index, s, names, externals) for s in statements}
    emitted = _emit_all(index, statements, rewrites, cache_dir)
    chunks: list[ModuleChunk] = []
    for section, module, group in _group_by_section(reading_order(index, statements, early=early)):
        path = index.modules[module].path.as_posix()
        provenance = [_provenance(path, s, rewrites[(s.module, s.index)], emitted[(s.module, s.index)]) for s in group]
        pieces = [f"{p.comment}\n{emitted[(s.module, s.index)]}" for s, p in zip(group, provenance)]
        chunks.append(
            ModuleChunk(
                module=module,
                path=path,
                docstring=index.modules[module].docstring,
                code=_join(group, pieces),
                section=section,
                definitions=tuple(provenance),
            )
        )
    imports = _import_block(externals)
    return InlinedProgram(
        imports=imports,
        chunks=tuple(chunks),
        names=names,
        source_files=tuple(chunk.path for chunk in chunks),
    )


def program_text(program: InlinedProgram) -> str:
    """The inlined program as one module (what a renderer puts under its header)."""
    text = "from __future__ import annotations\n"
    if program.imports:
        text += "\n" + "\n".join(program.imports) + "\n"
    for chunk in program.chunks:
        text += f"\n\n# %% {chunk.path}\n{chunk.code}"
    return text


# --------------------------------------------------------------------------- naming


def _ordered_statements(index: CatalogIndex, resolution: Resolution) -> list[TopLevel]:
    seen: set[tuple[str, int]] = set()
    ordered = []
    for key in resolution.order:
        statement = index.statements.get(key)
        if statement is None:
            raise CatalogError(f"{key[0]}.{key[1]} is not in the catalog index; re-run resolve on this index")
        sid = (statement.module, statement.index)
        if sid not in seen:
            seen.add(sid)
            ordered.append(statement)
    return ordered


class _Naming:
    """Gives every reached binding one name in the flat program, renaming on collision."""

    def __init__(self, index: CatalogIndex, reserved: set[str], fixed: dict[DefinitionKey, str]) -> None:
        self.index = index
        self.taken: set[str] = set(reserved) | set(fixed.values())
        self.fixed = fixed

    def externals(self, statements: list[TopLevel]) -> dict[tuple[str, str], tuple[ImportBinding, str]]:
        """External imports the statements use: (identity, local) -> (binding, emitted name)."""
        found: dict[tuple[str, str], tuple[ImportBinding, str]] = {}
        owner: dict[str, str] = {}  # emitted name -> identity
        for statement in statements:
            for dep in dependencies(self.index, statement):
                binding = dep.external
                if binding is None:
                    continue
                key = (binding.identity, binding.local)
                if key in found:
                    continue
                name = binding.local
                if name in self.taken and owner.get(name) != binding.identity:
                    if binding.attr is None and not binding.aliased:
                        raise CatalogError(
                            f"{self.index.location(binding_module(self.index, statement, binding), binding.lineno)}: "
                            f"`import {binding.module}` collides with another module-level name "
                            f"{name!r}; write `import {binding.module} as <alias>`"
                        )
                    name = self._fresh(name, binding.module.split(".")[-1])
                self.taken.add(name)
                owner[name] = binding.identity
                found[key] = (binding, name)
        return found

    def definitions(self, statements: list[TopLevel], provided: tuple[DefinitionKey, ...]) -> dict[DefinitionKey, str]:
        names: dict[DefinitionKey, str] = dict(self.fixed)
        # Builtins that each module's emitted code reads: a definition from another module
        # must not take such a name, or it would silently replace the builtin there.
        builtins_read: dict[str, set[str]] = {}
        for statement in statements:
            for dep in dependencies(self.index, statement):
                if dep.builtin:
                    builtins_read.setdefault(dep.name, set()).add(statement.module)
        for key in provided:
            if key not in names:
                names[key] = self._claim(key[1], key[0], builtins_read)
        for statement in statements:
            for name in statement.names:
                key = (statement.module, name)
                if key not in names:
                    names[key] = self._claim(name, statement.module, builtins_read)
        return names

    def _claim(self, name: str, module: str, builtins_read: dict[str, set[str]]) -> str:
        shadows = name in BUILTIN_NAMES and bool(builtins_read.get(name, set()) - {module})
        if name in self.taken or shadows:
            name = self._fresh(name, module.split(".")[-1])
        self.taken.add(name)
        return name

    def _fresh(self, name: str, qualifier: str) -> str:
        """``scale`` from components.models -> ``scale_models`` (then ``scale_models_2``, ...)."""
        base = f"{name}_{qualifier.strip('_') or 'mod'}"
        candidate, counter = base, 2
        while candidate in self.taken or candidate in BUILTIN_NAMES:
            candidate, counter = f"{base}_{counter}", counter + 1
        return candidate


def binding_module(index: CatalogIndex, statement: TopLevel, binding: ImportBinding) -> str:
    """The module whose import table holds ``binding`` (the statement's, or a re-exporter's)."""
    if index.imports.get((statement.module, binding.local)) is binding:
        return statement.module
    for (module, _), candidate in index.imports.items():
        if candidate is binding:
            return module
    return statement.module


# --------------------------------------------------------------------------- emitting


def _text_cache(cache_dir: Path) -> TextCache:
    if cache_dir not in _TEXT_CACHES:
        _TEXT_CACHES[cache_dir] = TextCache(cache_dir, "inline")
    return _TEXT_CACHES[cache_dir]


def clear_memory_caches() -> None:
    """Forget in-process results (benchmarks use it to measure a fresh process's warm build)."""
    _TEXT_CACHES.clear()


def _rewrite_for(
    index: CatalogIndex,
    statement: TopLevel,
    names: dict[DefinitionKey, str],
    externals: dict[tuple[str, str], tuple[ImportBinding, str]],
) -> _Rewrite:
    renames: dict[str, str] = {}
    attrs: dict[tuple[str, str], str] = {}
    local_imports: dict[str, str] = {}
    for name in statement.names:
        new = names[(statement.module, name)]
        if new != name:
            renames[name] = new
    for dep in dependencies(index, statement):
        if dep.external is not None:
            new = externals[(dep.external.identity, dep.external.local)][1]
        elif dep.target_key is not None:
            new = names[dep.target_key]
        else:
            continue  # builtins keep their names
        if dep.local_import:
            local_imports[dep.name] = new
        elif dep.attr is not None:
            attrs[(dep.name, dep.attr)] = new
        elif new != dep.name:
            renames[dep.name] = new
    return _Rewrite(
        names=tuple(sorted(renames.items())),
        attrs=tuple(sorted(attrs.items())),
        drop_registry=bool(statement.registrations),
        local_imports=tuple(sorted(local_imports.items())),
    )


def definition_hash(code: str) -> str:
    """Short sha256 of a catalog definition's source text (its provenance comment and map entry)."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:8]


def provenance_comment(path: str, names: tuple[str, ...], short_hash: str) -> str:
    """``# components/models/layers.py::Attention  (sha256:1a2b3c4d)``: the line above an emitted
    definition (``short_hash``: `definition_hash` of its catalog source)."""
    return f"# {path}::{','.join(names)}  (sha256:{short_hash})"


def _provenance(path: str, statement: TopLevel, rewrite: _Rewrite, text: str) -> EmittedDefinition:
    renames = {new: old for old, new in rewrite.names}
    renames.update({new: f"{alias}.{attr}" for (alias, attr), new in rewrite.attrs})
    short_hash = definition_hash(statement.code)
    return EmittedDefinition(
        module=statement.module,
        path=path,
        names=statement.names,
        source_lines=(statement.first_line, statement.first_line + statement.code.rstrip("\n").count("\n")),
        sha256=short_hash,
        comment=provenance_comment(path, statement.names, short_hash),
        lines=text.rstrip("\n").count("\n") + 2,
        renames=tuple(sorted(renames.items())),
    )


def _emit_all(
    index: CatalogIndex,
    statements: list[TopLevel],
    rewrites: dict[tuple[str, int], _Rewrite],
    cache_dir: Path,
) -> dict[tuple[str, int], str]:
    """Formatted text of every statement: its catalog text, or rewritten (cached).

    The catalog is black-clean at the generator's settings (tests/test_catalog_style.py), and
    so is each of its statements; dropping whole decorator lines keeps it so. Only a statement
    renamed in can change shape, and only where black could reshape a respelled line
    (formatting.stays_black_clean): only those go to black.
    """
    cache = _text_cache(cache_dir)
    emitted: dict[tuple[str, int], str] = {}
    todo: list[tuple[tuple[str, int], str, str, str]] = []  # (statement id, cache key, code, where)
    for statement in statements:
        rewrite = rewrites[(statement.module, statement.index)]
        code = _drop_registry_decorators(statement) if rewrite.drop_registry else statement.code
        if not rewrite.respells():
            emitted[(statement.module, statement.index)] = code
            continue
        key = content_key("inline", INLINE_VERSION, statement.code, repr(rewrite))
        hit = cache.get(key)
        if hit is not None:
            emitted[(statement.module, statement.index)] = hit
            continue
        where = index.location(statement.module, statement.lineno)
        renamed = _apply(code, rewrite, where, index.package)
        if stays_black_clean(code, renamed):  # black would return it unchanged: no need to ask it
            cache.put(key, renamed)
            emitted[(statement.module, statement.index)] = renamed
            continue
        todo.append(((statement.module, statement.index), key, renamed, where))
    if todo:
        formatted = format_many([t[2] for t in todo], cache_dir=cache_dir, what=[t[3] for t in todo])
        for (sid, key, _, _), text in zip(todo, formatted):
            cache.put(key, text)
            emitted[sid] = text
    return emitted


def _drop_registry_decorators(statement: TopLevel) -> str:
    """The statement without its ``@<kind>_registry.register(...)`` lines.

    A decorator owns whole lines (from ``@`` to the end of its expression), and the index
    recorded them, so removing them is exact without re-parsing the definition.
    """
    lines = statement.code.split("\n")
    drop: set[int] = set()
    for registration in statement.registrations:
        first = registration.lineno - statement.first_line
        last = max(registration.end_lineno, registration.lineno) - statement.first_line
        drop.update(range(first, last + 1))
    return "\n".join(line for number, line in enumerate(lines) if number not in drop)


def _apply(code: str, rewrite: _Rewrite, where: str, package: str) -> str:
    from generator.rename import rewrite_names

    return rewrite_names(
        code,
        names=dict(rewrite.names),
        attrs=dict(rewrite.attrs),
        local_imports=dict(rewrite.local_imports),
        where=where,
        package=package,
    )


def _group_by_section(placed: list[Placed]) -> list[tuple[str, str, list[TopLevel]]]:
    """Runs of one module inside one section (a module whose definitions stand in two sections
    gives two chunks: e.g. the runtime's `RunOptions` beside `Config`, the rest in support)."""
    groups: list[tuple[str, str, list[TopLevel]]] = []
    for item in placed:
        statement = item.statement
        if groups and groups[-1][:2] == (item.section, statement.module):
            groups[-1][2].append(statement)
        else:
            if any(group[:2] == (item.section, statement.module) for group in groups):
                raise CatalogError(f"{statement.module}: reading order is not grouped by module")
            groups.append((item.section, statement.module, [statement]))
    return groups


def _join(group: list[TopLevel], pieces: list[str]) -> str:
    """black-stable joins: two blank lines around defs, none between adjacent constants.

    Each piece opens with its provenance comment; a constant whose own source opens with a
    comment gets blank lines, as in the catalog."""
    out = [pieces[0]]
    for previous, statement, piece in zip(group, group[1:], pieces[1:]):
        adjacent_constants = (
            previous.kind == statement.kind == "constant"
            and statement.index == previous.index + 1
            and not piece.split("\n", 1)[1].startswith("#")
        )
        out.append(piece if adjacent_constants else "\n\n" + piece)
    return "".join(out)


# --------------------------------------------------------------------------- imports


def _import_block(externals: dict[tuple[str, str], tuple[ImportBinding, str]]) -> tuple[str, ...]:
    """Merged, deduplicated, sorted import lines (stdlib, '', third party) under their emitted names."""
    return tuple(merge_imports(binding.statement(name) for binding, name in externals.values()))
