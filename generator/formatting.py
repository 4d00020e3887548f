"""black, behind a content-hash cache: the same text is never formatted twice.

black costs ~1.3 s per 3,000 lines (FACTS.md), so a warm build must not run it on
catalog code that has not changed. Results are cached per input text under
``<cache_dir>/black/`` (and in memory); the key covers black's version and mode, so an
upgrade simply misses. black itself is imported only on a miss.
"""

from __future__ import annotations

import functools
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


def format_code(source: str, *, cache_dir: Path | None = None, what: str = "generated code") -> str:
    """``source`` formatted by black (line length 88, Python 3.10 target), cached by content.

    ``cache_dir``: the build cache folder (``<catalog root>/.sigmae-cache``); None keeps the
    cache in memory only. ``what`` names the source in error messages.
    """
    cache = _cache(cache_dir)
    key = content_key("black", _black_version(), str(LINE_LENGTH), TARGET, source)
    hit = cache.get(key)
    if hit is not None:
        return hit
    import black

    mode = black.Mode(line_length=LINE_LENGTH, target_versions={black.TargetVersion.PY310})
    try:
        formatted = black.format_str(source, mode=mode)
    except black.InvalidInput as exc:
        raise FormatError(f"black cannot parse {what}: {exc}\n--- source ---\n{_numbered(source)}") from None
    cache.put(key, formatted)
    # Formatting formatted text is the identity: remember that too, so re-formatting a
    # whole file made of cached pieces is a cache hit.
    cache.put(content_key("black", _black_version(), str(LINE_LENGTH), TARGET, formatted), formatted)
    return formatted


def _numbered(source: str, limit: int = 60) -> str:
    lines = source.splitlines()
    shown = [f"{i:4d} | {line}" for i, line in enumerate(lines[:limit], start=1)]
    if len(lines) > limit:
        shown.append(f"     ... {len(lines) - limit} more lines")
    return "\n".join(shown)
