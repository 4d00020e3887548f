"""black, behind a content-hash cache: the same text is never formatted twice.

black costs ~1.3 s per 3,000 lines (FACTS.md), so a warm build must not run it on
catalog code that has not changed. Results are cached per input text under
``<cache_dir>/black/`` (and in memory); the key covers black's version and mode, so an
upgrade simply misses. black itself is imported only on a miss.

`merge_imports` writes import blocks directly in black's layout (no black run needed).
"""

from __future__ import annotations

import ast
import functools
import multiprocessing as mp
import os
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from generator.cache import TextCache, content_key

LINE_LENGTH = 88
TARGET = "py310"  # the oldest Python the emitted code supports (pyproject: >=3.10)


class FormatError(ValueError):
    """black rejected generated code: a generator bug, reported with the offending lines."""


@functools.cache
def _black_version() -> str:
    try:
        return metadata.version("black")
    except metadata.PackageNotFoundError:  # pragma: no cover - black is a runtime dependency
        return "unknown"


_CACHES: dict[Path | None, TextCache] = {}


def _cache(cache_dir: Path | None) -> TextCache:
    key = None if cache_dir is None else Path(cache_dir)
    if key not in _CACHES:
        _CACHES[key] = TextCache(key, "black")
    return _CACHES[key]


def clear_memory_caches() -> None:
    """Forget in-process results (benchmarks use it to measure a fresh process's warm build)."""
    _CACHES.clear()


def _key(source: str) -> str:
    return content_key("black", _black_version(), str(LINE_LENGTH), TARGET, source)


def _black(source: str) -> tuple[bool, str]:
    """(True, formatted) or (False, black's complaint); runs in worker processes too."""
    import black

    mode = black.Mode(line_length=LINE_LENGTH, target_versions={black.TargetVersion.PY310})
    try:
        return True, black.format_str(source, mode=mode)
    except black.InvalidInput as exc:
        return False, str(exc)


def _remember(cache: TextCache, source: str, formatted: str) -> None:
    cache.put(_key(source), formatted)
    # Formatting formatted text is the identity: remember that too, so re-formatting a
    # whole file made of cached pieces is a cache hit.
    cache.put(_key(formatted), formatted)


def format_code(source: str, *, cache_dir: Path | None = None, what: str = "generated code") -> str:
    """``source`` formatted by black (line length 88, Python 3.10 target), cached by content.

    ``cache_dir``: the build cache folder (``<catalog root>/.sigmae-cache``); None keeps the
    cache in memory only. ``what`` names the source in error messages.
    """
    return format_many([source], cache_dir=cache_dir, what=[what])[0]


# Below this much text to format, starting worker processes costs more than it saves.
PARALLEL_MIN_CHARS = 40_000


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def format_many(
    sources: Sequence[str],
    *,
    cache_dir: Path | None = None,
    what: Sequence[str] | None = None,
    workers: int | None = None,
) -> list[str]:
    """Like ``format_code`` for many pieces; cache misses are formatted on all usable cores.

    A cold build formats thousands of lines of catalog code (black: ~0.7 ms per line), so
    the misses are spread over worker processes (fork: they inherit the imported black).
    """
    cache = _cache(cache_dir)
    results: list[str | None] = [cache.get(_key(source)) for source in sources]
    missing = [i for i, hit in enumerate(results) if hit is None]
    if not missing:
        return results  # type: ignore[return-value]
    import black  # noqa: F401  - imported before forking, so workers share it

    workers = workers if workers is not None else _usable_cpus()
    size = sum(len(sources[i]) for i in missing)
    outcomes: list[tuple[bool, str]]
    if workers > 1 and len(missing) > 1 and size >= PARALLEL_MIN_CHARS and "fork" in mp.get_all_start_methods():
        # Largest first, one at a time: keeps both cores busy to the end.
        order = sorted(missing, key=lambda i: -len(sources[i]))
        with mp.get_context("fork").Pool(min(workers, len(missing))) as pool:
            formatted = pool.map(_black, [sources[i] for i in order], chunksize=1)
        by_index = dict(zip(order, formatted))
        outcomes = [by_index[i] for i in missing]
    else:
        outcomes = [_black(sources[i]) for i in missing]
    for i, (ok, text) in zip(missing, outcomes):
        if not ok:
            name = what[i] if what is not None else "generated code"
            raise FormatError(f"black cannot parse {name}: {text}\n--- source ---\n{_numbered(sources[i])}")
        _remember(cache, sources[i], text)
        results[i] = text
    return results  # type: ignore[return-value]


def _numbered(source: str, limit: int = 60) -> str:
    lines = source.splitlines()
    shown = [f"{i:4d} | {line}" for i, line in enumerate(lines[:limit], start=1)]
    if len(lines) > limit:
        shown.append(f"     ... {len(lines) - limit} more lines")
    return "\n".join(shown)


def merge_imports(lines: Iterable[str]) -> list[str]:
    """Merge import statements: one `import x` per module, one `from m import a, b` per module.

    Output is grouped like isort: standard library first, then third-party (torch, hypothesis),
    a blank line ('') between the groups; in each group plain imports, then from-imports,
    sorted by module. Deterministic for the same set of imports, whatever their input order.
    A from-import longer than a line is wrapped as black wraps it (one name per line, in
    parentheses), so the import block needs no black run of its own.
    """
    plain: set[tuple[str, str | None]] = set()
    from_names: dict[str, set[tuple[str, str | None]]] = {}
    for line in lines:
        if not line.strip():
            continue
        for stmt in ast.parse(line).body:
            if isinstance(stmt, ast.Import):
                plain.update((alias.name, alias.asname) for alias in stmt.names)
            elif isinstance(stmt, ast.ImportFrom):
                module = "." * stmt.level + (stmt.module or "")
                from_names.setdefault(module, set()).update((alias.name, alias.asname) for alias in stmt.names)
            else:
                raise FormatError(f"not an import statement: {line!r}")
    from_names.pop("__future__", None)  # the header carries `from __future__ import annotations`

    def spelled(name: str, asname: str | None) -> str:
        return name + (f" as {asname}" if asname else "")

    groups: dict[bool, list[str]] = {True: [], False: []}
    for name, asname in sorted(plain, key=lambda p: (p[0], p[1] or "")):
        groups[_is_stdlib(name)].append(f"import {spelled(name, asname)}")
    for module in sorted(from_names):
        names = [spelled(n, a) for n, a in sorted(from_names[module], key=lambda p: (p[0], p[1] or ""))]
        line = f"from {module} import " + ", ".join(names)
        if len(line) > LINE_LENGTH:
            line = f"from {module} import (\n" + "".join(f"    {name},\n" for name in names) + ")"
        groups[_is_stdlib(module)].append(line)
    if groups[True] and groups[False]:
        return [*groups[True], "", *groups[False]]
    return groups[True] or groups[False]


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names
