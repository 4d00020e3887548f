"""black, behind a content-hash cache: the same text is never formatted twice.

Only what the generator writes goes to black (the skeleton, the test module's header and
bindings, definitions it renamed): catalog text is black-clean already. black costs ~0.7 ms
a line and ~0.2 s to import, so a warm build must not run it at all. Results are cached per
input text under
``<cache_dir>/black/`` (and in memory); the key covers black's version and mode, so an
upgrade simply misses. black itself is imported only on a miss.

`merge_imports` writes import blocks directly in black's layout (no black run needed).
"""

from __future__ import annotations

import ast
import functools
import io
import keyword
import re
import sys
import tokenize
from collections.abc import Iterable, Sequence
from pathlib import Path

from generator.cache import TextCache, content_key

LINE_LENGTH = 88
TARGET = "py310"  # the oldest Python the emitted code supports (pyproject: >=3.10)


class FormatError(ValueError):
    """black rejected generated code: a generator bug, reported with the offending lines."""


@functools.cache
def _black_version() -> str:
    """black's version, for the cache key, without importing black (~0.2 s) or scanning
    every installed distribution (importlib.metadata: ~20 ms): black ships it as the
    one-line top-level module ``_black_version`` that its own ``__version__`` reads."""
    try:
        from _black_version import version  # type: ignore[import-not-found]

        return str(version)
    except ImportError:  # pragma: no cover - an unusual black install
        pass
    from importlib import metadata

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
    """(True, formatted) or (False, black's complaint)."""
    import black

    mode = black.Mode(line_length=LINE_LENGTH, target_versions={black.TargetVersion.PY310})
    try:
        return True, black.format_str(_prepared(source), mode=mode)
    except black.InvalidInput as exc:
        return False, str(exc)


def _prepared(source: str) -> str:
    """``source`` with what black's first pass would respell respelled already, so that the
    pass leaves it as it is and black skips its second one (``format_str`` runs twice on text
    it changes): simple strings in double quotes, a docstring's closing quotes at its own
    indentation, a final newline. black normalizes each of those leaf by leaf, to the same
    text from either spelling, so its output is the same (where black still has lines to
    split, its second pass runs as before). Costs ~1% of what it saves.
    """
    lines = source.split("\n")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source  # black says what is wrong
    inside_fstrings = {id(node) for joined in ast.walk(tree) if isinstance(joined, ast.JoinedStr) for node in ast.walk(joined)}
    docstrings = {
        id(body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        for body in [node.body]
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    }
    edits: dict[int, list[tuple[int, int, str]]] = {}  # line index -> (start, end, text), ASCII lines only
    for node in ast.walk(tree):
        if type(node) is not ast.Constant or type(node.value) is not str or id(node) in inside_fstrings:
            continue
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        if first == last and lines[first].isascii():
            text = lines[first][node.col_offset : node.end_col_offset]
            body = text[1:-1]
            if len(text) >= 2 and text[0] == text[-1] == "'" and not (set(body) & {"'", '"', "\\"}):
                edits.setdefault(first, []).append((node.col_offset, node.end_col_offset, f'"{body}"'))
        elif first < last and id(node) in docstrings and lines[last] == '"""' and lines[first].isascii():
            if lines[first][node.col_offset : node.col_offset + 3] == '"""':
                edits.setdefault(last, []).append((0, 0, " " * node.col_offset))
    for number, changes in edits.items():
        line = lines[number]
        for start, end, text in sorted(changes, reverse=True):
            line = line[:start] + text + line[end:]
        lines[number] = line
    prepared = "\n".join(lines)
    return prepared if prepared.endswith("\n") else prepared + "\n"


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


def format_many(
    sources: Sequence[str],
    *,
    cache_dir: Path | None = None,
    what: Sequence[str] | None = None,
) -> list[str]:
    """Like ``format_code`` for many pieces (one call per build stage: its misses in one go).

    A build formats only the code the generator writes and the few definitions it renamed
    (at most ~35,000 characters for a shipped spec, cold), so black runs in this process:
    a pool of workers costs more to start than it would save.
    """
    cache = _cache(cache_dir)
    results: list[str | None] = [cache.get(_key(source)) for source in sources]
    for i, source in enumerate(sources):
        if results[i] is not None:
            continue
        ok, text = _black(source)
        if not ok:
            name = what[i] if what is not None else "generated code"
            raise FormatError(f"black cannot parse {name}: {text}\n--- source ---\n{_numbered(source)}")
        _remember(cache, source, text)
        results[i] = text
    return results  # type: ignore[return-value]


def stays_black_clean(original: str, renamed: str) -> bool:
    """Whether black leaves ``renamed`` as it is, given that it leaves ``original`` as it is
    and ``renamed`` is ``original`` with names respelled in place (generator/rename.py).

    black keeps a logical line that fits in ``LINE_LENGTH`` columns as it is (its spacing
    does not depend on how a name is spelled); only a line it must split, or one it split
    before, can change shape. So: True when every changed line still fits, is ASCII (black
    counts wide characters double) and is either a whole logical line of its own, or part
    of a `def` header black split at its parameters and would split the same way again
    (`def f(` / one parameter a line, each with a comma: the magic trailing comma keeps
    that; or `def f(` / the parameters / `) -> R:` while the joined header is still too
    long). Anything else (a changed line inside other brackets, a line too long now, a line
    added or removed, a comment there, a name respelled to a soft keyword) is left to
    black. A sufficient condition, never a guess: the inliner runs black whenever it is False.
    """
    old_lines, new_lines = original.split("\n"), renamed.split("\n")
    if len(old_lines) != len(new_lines):
        return False
    changed = [i + 1 for i, (old, new) in enumerate(zip(old_lines, new_lines)) if old != new]
    if not changed:
        return True
    for row in changed:
        line = new_lines[row - 1]
        if len(line) > LINE_LENGTH or not line.isascii():
            return False
    soft = set(keyword.softkwlist)
    if any(token in soft for row in changed for token in _WORD.findall(new_lines[row - 1])):
        return False
    layout = _layout(original)
    if layout is None:
        return False
    touched = set()
    for row in changed:
        if row in layout.whole:
            continue
        header = next((h for h in layout.headers if h[0] < row <= h[1] or h[0] == row), None)
        if header is None:
            return False
        touched.add(header)
    return all(_header_keeps_shape(new_lines, first, last, layout) for first, last in touched)


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEF_HEAD = re.compile(r"( *)(?:async )?def [A-Za-z_][A-Za-z0-9_]*\(")
_TRAILING_COMMA = re.compile(r",\s*[)\]}]")


class _Layout:
    """Where the logical lines of a text stand (tokenize), for stays_black_clean."""

    def __init__(self) -> None:
        self.whole: set[int] = set()  # lines that hold one whole logical line
        self.headers: list[tuple[int, int]] = []  # first and last line of each multi-line `def` header
        self.start_depth: dict[int, int] = {}  # bracket depth before a line's first token
        self.end_depth: dict[int, int] = {}  # ... and after its last one
        self.top_commas: dict[int, int] = {}  # commas at depth 1 on each line
        self.comments: set[int] = set()


def _layout(source: str) -> _Layout | None:
    """The logical lines of ``source`` (None: not tokenizable)."""
    layout = _Layout()
    start: int | None = None
    opening: list[str] = []
    depth = 0
    skip = (tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                layout.comments.add(token.start[0])
            elif token.type == tokenize.NEWLINE:
                if start is not None and start == token.start[0]:
                    layout.whole.add(start)
                elif start is not None and (opening[:1] == ["def"] or opening == ["async", "def"]):
                    layout.headers.append((start, token.start[0]))
                start, opening = None, []
            elif token.type == tokenize.ENDMARKER:
                break
            elif token.type not in skip:
                if start is None:
                    start = token.start[0]
                if len(opening) < 2:
                    opening.append(token.string)
                layout.start_depth.setdefault(token.start[0], depth)
                if token.type == tokenize.OP and token.string in "([{":
                    depth += 1
                elif token.type == tokenize.OP and token.string in ")]}":
                    depth -= 1
                elif token.type == tokenize.OP and token.string == "," and depth == 1:
                    layout.top_commas[token.start[0]] = layout.top_commas.get(token.start[0], 0) + 1
                layout.end_depth[token.end[0]] = depth
    except (tokenize.TokenError, SyntaxError):
        return None
    return layout


def _header_keeps_shape(lines: list[str], first: int, last: int, layout: _Layout) -> bool:
    """Whether black splits the respelled `def` header ``lines[first-1:last]`` as the original was split."""
    head, body, tail = lines[first - 1], lines[first : last - 1], lines[last - 1]
    match = _DEF_HEAD.fullmatch(head)
    if match is None or not body or any(row in layout.comments for row in range(first, last + 1)):
        return False
    indent = match.group(1)
    # the closing bracket opens the tail; a magic trailing comma in the return type splits elsewhere
    if not (tail.startswith(indent + ")") and tail.endswith(":")) or _TRAILING_COMMA.search(tail):
        return False
    if any(len(line) > LINE_LENGTH or not line.isascii() for line in (head, *body, tail)):
        return False
    rows = range(first + 1, last)
    if any(layout.start_depth.get(row) != 1 or layout.end_depth.get(row) != 1 for row in rows):
        return False  # a parameter runs over more than one line
    if all(line.endswith(",") for line in body):  # one parameter a line: the magic trailing comma keeps it
        return all(layout.top_commas.get(row) == 1 for row in rows)
    if len(body) == 1:  # `def f(` / parameters / `) -> R:`: black splits so while the whole is too long
        return len(head + body[0].strip() + tail.strip()) > LINE_LENGTH
    return False


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
