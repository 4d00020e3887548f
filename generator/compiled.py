"""The compile stages' results kept between builds: what resolve + inline made, reused while
nothing they read has changed.

A rebuild after a spec edit that keeps its components (a learning rate, a step count, the
outputs), a `--check`, or a rebuild after a pull that touched other catalog files reaches the
same definitions and emits the same program: those stages are a pure function of the chosen
roots, the skeleton's reserved names, the generator's own code, black's and Python's versions,
and the catalog code they read. This cache records that catalog code by content and reuses
the result only when all of it is unchanged:

- the path and sha256 of every module whose facts the index had loaded (it loads a module's
  analysis only when a stage asks about it, so that set covers every statement, import and
  re-export the resolver followed and every contract module the test plan read; in a process
  that built other specs first it is larger, which costs hits, never correctness);
- the registry: which component (kind and name) is registered where, at which version, for
  every module, loaded or not (a fixture registered in a new place changes the test plan);
- the catalog's modules and their paths (a new module can turn an undefined name into a
  module the resolver follows; a module moved into a package changes every path it gave).

Anything else read at compile time is part of the key or of the entry's version. An edit to a
module the compile read is a miss (a full compile, as without the cache); an edit elsewhere is
a hit. One entry per key under ``<cache>/compiled/``, replaced by the next miss, written
atomically; a corrupt, foreign or unreadable one is a miss; entries not written for a month
are pruned (generator/cache.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

from generator.cache import TextCache, content_key, load_pickle, store_pickle
from generator.index import CatalogIndex
from generator.ir import CheckSuite, DefinitionKey, InlinedProgram, Resolution

NAMESPACE = "compiled"


def _generator_version() -> str:
    """Every generator source file and black's version: an edited generator never reuses a result."""
    from generator.formatting import _black_version

    here = Path(__file__).resolve().parent
    return content_key(_black_version(), *(path.read_bytes() for path in sorted(here.glob("*.py"))))[:16]


# At import, as the index's and the inliner's versions are: a generator file edited after this
# process imported the generator must not label results of the old code with the new version.
GENERATOR_VERSION = _generator_version()


@dataclass(frozen=True)
class CompiledParts:
    """What the compile stages produce for one set of roots (CompiledSpec holds them with the spec)."""

    resolution: Resolution
    program: InlinedProgram
    tests: CheckSuite | None


@dataclass(frozen=True)
class _Entry:
    version: str  # GENERATOR_VERSION of the generator that made it
    parts: CompiledParts
    read: tuple[tuple[str, str, str], ...]  # (module, path, sha256) of every module it depends on
    registry: str  # content key of the catalog's registrations
    modules: str  # content key of the catalog's modules and their paths


def compile_key(index: CatalogIndex, roots: Collection[DefinitionKey], reserved: Collection[str], tests: bool) -> str:
    """The cache key: what the compile stages read that is neither catalog code nor the
    generator's (Python's version: the builtins and standard-library names they look up)."""
    return content_key(NAMESPACE, sys.version, index.package, repr(tuple(roots)), repr(sorted(reserved)), "tests" if tests else "script")


def _modules(index: CatalogIndex) -> str:
    return content_key(*(f"{name}\0{info.path.as_posix()}" for name, info in index.modules.items()))


def _registry(index: CatalogIndex) -> str:
    return content_key(*(f"{c.kind}\0{c.name}\0{c.module}\0{c.qualname}\0{c.version}" for c in index.components.values()))


class CompiledCache:
    """Compile results under ``<cache_dir>/compiled/<key[:2]>/<key>`` (``cache_dir`` None: off)."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.directory = None if cache_dir is None else Path(cache_dir) / NAMESPACE

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / key

    def get(self, index: CatalogIndex, key: str) -> CompiledParts | None:
        """The stored result for ``key`` if every catalog fact it was made from still holds."""
        if self.directory is None:
            return None
        entry = load_pickle(self._path(key))  # None: missing, unreadable, truncated
        if not isinstance(entry, _Entry) or entry.version != GENERATOR_VERSION or not isinstance(entry.parts, CompiledParts):
            return None
        if entry.modules != _modules(index) or entry.registry != _registry(index):
            return None
        modules = index.modules
        for module, path, sha256 in entry.read:
            info = modules.get(module)
            if info is None or info.sha256 != sha256 or info.path.as_posix() != path:
                return None
        return entry.parts

    def put(self, index: CatalogIndex, key: str, parts: CompiledParts) -> None:
        """Store ``parts``, made from what ``index`` has loaded so far (a superset is safe)."""
        if self.directory is None:
            return
        read = tuple(
            (module, index.modules[module].path.as_posix(), index.modules[module].sha256)
            for module in sorted(set(index.loaded_modules()))
            if module in index.modules
        )
        store_pickle(self._path(key), _Entry(GENERATOR_VERSION, parts, read, _registry(index), _modules(index)))
        TextCache(self.directory.parent, NAMESPACE).prune()
