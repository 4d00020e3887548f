"""Load a YAML spec, apply `extends:` and `--set` overrides, and validate it against the catalog.

A spec names one component per section (`data`, `transform`, `model`), a list of recipe
steps, and what `--smoke` changes (components/README.md §4). Validation reads the chosen
components' signatures from the static catalog index — never by importing the catalog — and
checks every value against its parameter's annotation, so a spec that loads is a spec that
renders. Every error is a `SpecError` carrying `file:line:column` and the fix.

YAML is parsed with `yaml.compose` (the safe loader's composer) so each value keeps its
position; scalars are typed by the safe constructor, and only plain YAML types are accepted.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import keyword
import math
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping, Protocol, Sequence

import yaml

from generator.errors import SpecError
from generator.ir import Component, Param

TOP_LEVEL_KEYS = ("name", "description", "extends", "data", "transform", "model", "recipe", "smoke", "outputs")
OUTPUT_KINDS = ("script", "notebook", "tests")
# Section names taken by the emitted Config (run options) or by the spec's own layout.
RESERVED_SECTIONS = frozenset({"run", "data", "transform", "model", "smoke", "recipe"})
# An emitted `<name>.py` must not shadow a module the script (or its tests) imports.
SHADOWED_MODULES = frozenset(sys.stdlib_module_names) | {"torch", "numpy", "pytest", "hypothesis", "components", "generator", "matplotlib", "conftest"}
_MAX_NODES = 100_000  # guards alias bombs ("billion laughs") while converting YAML nodes
_MAX_DEPTH = 100  # nesting of mappings and lists; PyYAML's composer recurses, so it is checked first
_MAX_EXTENDS = 32  # files in one `extends:` chain


class CatalogLookup(Protocol):
    """What validation needs from the catalog index (generator.index.CatalogIndex has it)."""

    components: Mapping[tuple[str, str], Component]

    def components_of(self, kind: str) -> Sequence[Component]: ...


# --------------------------------------------------------------------------- positions


@dataclass(frozen=True)
class Location:
    """1-based position of a value in a spec file (or in a `--set` argument)."""

    file: str
    line: int
    column: int

    def error(self, message: str) -> SpecError:
        return SpecError(message, self.file, self.line, self.column)


@dataclass
class Node:
    """A YAML value with its position. Mappings hold `dict[str, Node]`, sequences `list[Node]`."""

    value: Any
    loc: Location
    key_locs: dict[str, Location] = field(default_factory=dict)

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.value, list)

    def plain(self) -> Any:
        """The value as plain Python (dicts, lists, scalars), positions dropped."""
        if self.is_mapping:
            return {key: child.plain() for key, child in self.value.items()}
        if self.is_sequence:
            return [child.plain() for child in self.value]
        return self.value


_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


def _mark_location(file: str, mark: Any, line_offset: int = 0, column_offset: int = 0) -> Location:
    if mark is None:
        return Location(file, 1 + line_offset, 1 + column_offset)
    return Location(file, mark.line + 1 + line_offset, mark.column + 1 + column_offset)


# libyaml's parser (PyYAML's wheels ship it) for plain text, ~20x faster than the pure-Python
# scanner (which was a tenth of a warm build), with the same events and marks. The two parsers
# disagree at the edges of YAML (differential fuzzing found: tabs, a BOM, non-ASCII line ends,
# tags `!`, `?` inside flow collections, a comment right after a block-scalar header, escapes,
# a document without a final newline), so only text clear of all of those takes it: printable
# ASCII and newlines, ending in one, without `!`, `?` or a backslash, and no `|`/`>` header
# followed by `#`. Any other text, and anything libyaml refuses, goes to the pure-Python parser:
# which documents parse, and what an error says, never depend on how PyYAML was built. The
# composer stays Python's (below), so a deep document meets the depth check, never C recursion.
_FAST_LOADER = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else None
_NOT_PLAIN = re.compile(r"[^\n\x20-\x7e]|[!?\\]|[|>][-+0-9]*#")


def _parsed_events(text: str) -> list[yaml.Event]:
    if _FAST_LOADER is not None and text.endswith("\n") and not _NOT_PLAIN.search(text):
        try:
            return list(yaml.parse(text, Loader=_FAST_LOADER))
        except Exception:  # noqa: BLE001 - the pure-Python parser below says what is wrong, as it always has
            pass
    return list(yaml.parse(text, Loader=yaml.SafeLoader))


def _checked_events(text: str, file: str, column_offset: int) -> list[yaml.Event]:
    """The document's event stream, refusing nesting deeper than `_MAX_DEPTH` (the parser does
    not recurse; the composer does, so it only ever sees a stream that passed)."""
    depth = 0
    events = _parsed_events(text)
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                where = _mark_location(file, event.start_mark, column_offset=column_offset)
                raise where.error(f"the spec is nested more than {_MAX_DEPTH} levels deep; write it out flatter")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return events


class _EventComposer(yaml.composer.Composer, yaml.resolver.Resolver):
    """The safe loader's composer and resolver over an event stream already parsed (the depth
    check's), so a spec is scanned and parsed once, not twice (~40% of the YAML time)."""

    def __init__(self, events: list[yaml.Event]) -> None:
        self._events = events
        self._at = 0
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)

    def check_event(self, *choices: type) -> bool:  # yaml.parser.Parser's three event methods
        if self._at >= len(self._events):
            return False
        return not choices or isinstance(self._events[self._at], choices)

    def peek_event(self) -> yaml.Event | None:
        return self._events[self._at] if self._at < len(self._events) else None

    def get_event(self) -> yaml.Event | None:
        event = self.peek_event()
        self._at += 1
        return event


def parse_yaml(text: str, file: str, *, column_offset: int = 0) -> Node | None:
    """Parse one YAML document into a positioned `Node` tree (None for an empty document)."""
    try:
        root = _EventComposer(_checked_events(text, file, column_offset)).get_single_node()
    except yaml.MarkedYAMLError as exc:
        where = _mark_location(file, exc.problem_mark or exc.context_mark, column_offset=column_offset)
        problem = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        raise where.error(f"YAML syntax error: {problem}; fix the YAML syntax (check indentation, quotes and brackets)") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML syntax error: {exc}; fix the YAML syntax", file, 1, 1) from None
    if root is None:
        return None
    constructor = yaml.constructor.SafeConstructor()
    budget = [_MAX_NODES]

    def convert(node: yaml.Node, depth: int) -> Node:
        loc = _mark_location(file, node.start_mark, column_offset=column_offset)
        budget[0] -= 1
        if budget[0] < 0 or depth > _MAX_DEPTH:
            raise loc.error("the spec is too large or too deeply nested (recursive YAML aliases?); write it out plainly")
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                raise loc.error(f"unsupported YAML tag {node.tag!r}; only plain YAML values are allowed: remove the !! tag")
            items: dict[str, Node] = {}
            key_locs: dict[str, Location] = {}
            for key_node, value_node in node.value:
                key_loc = _mark_location(file, key_node.start_mark, column_offset=column_offset)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                    shown = getattr(key_node, "value", "?")
                    raise key_loc.error(f"mapping keys must be plain strings, got {shown!r}; quote the key or remove it")
                key = key_node.value
                if key in items:
                    raise key_loc.error(f"duplicate key {key!r}; keep only one of them")
                items[key] = convert(value_node, depth + 1)
                key_locs[key] = key_loc
            return Node(items, loc, key_locs)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise loc.error(f"unsupported YAML tag {node.tag!r}; only plain YAML values are allowed: remove the !! tag")
            return Node([convert(child, depth + 1) for child in node.value], loc)
        if node.tag not in _PLAIN_TAGS:
            raise loc.error(
                f"unsupported YAML value {node.value!r} (tag {node.tag}); only strings, numbers, booleans, null, "
                "lists and mappings are allowed: quote it to make it a string"
            )
        try:
            value = constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise loc.error(f"cannot read YAML value {node.value!r}: {exc}; quote it or fix the number") from None
        return Node(value, loc)

    return convert(root, 0)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Choice:
    """One configured component: a section of the emitted Config.

    `values` holds every schema parameter, typed to its annotation (tuples where the
    annotation says tuple): the spec's value where it sets one, else the signature default.
    """

    section: str  # "data", "transform", "model", or a recipe step's name
    component: Component
    values: dict[str, Any]
    from_spec: frozenset[str]
    loc: Location

    @property
    def params(self) -> tuple[Param, ...]:
        return self.component.params


@dataclass(frozen=True)
class SpecFile:
    """A spec file that went into a build (the main spec and every `extends:` base)."""

    display: str  # path relative to the main spec's folder
    path: Path
    sha256: str


@dataclass(frozen=True)
class Spec:
    """A validated spec: everything the renderer and emitters need, nothing left to check."""

    name: str
    description: str
    path: Path
    files: tuple[SpecFile, ...]
    overrides: tuple[str, ...]
    data: Choice
    transform: Choice
    model: Choice
    steps: tuple[Choice, ...]
    smoke_data: Choice | None
    smoke: dict[str, dict[str, Any]]  # section -> overrides ("data" -> smoke data kwargs)
    outputs: tuple[str, ...]

    @property
    def sections(self) -> tuple[Choice, ...]:
        """Config sections in order: data, transform, model, then one per recipe step."""
        return (self.data, self.transform, self.model, *self.steps)

    @property
    def components(self) -> tuple[Component, ...]:
        """Every chosen component (smoke data included), each once, in section order."""
        seen: dict[tuple[str, str], Component] = {}
        for choice in (*self.sections, *([self.smoke_data] if self.smoke_data else [])):
            seen.setdefault((choice.component.kind, choice.component.name), choice.component)
        return tuple(seen.values())


# --------------------------------------------------------------------------- helpers


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest option, or ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def section_class_name(section: str) -> str:
    """Config dataclass name of a section: 'pretrain' -> 'PretrainConfig', 'k_fold' -> 'KFoldConfig'."""
    return "".join(part[:1].upper() + part[1:] for part in section.split("_") if part) + "Config"


def skeleton_names(spec: Spec) -> tuple[str, ...]:
    """Top-level names the generated skeleton defines: the inliner must not emit catalog code under them."""
    return ("Config", "build_pipeline", "main", *(section_class_name(choice.section) for choice in spec.sections))


def _describe(value: Any) -> str:
    kind = "null" if value is None else {dict: "mapping", list: "list"}.get(type(value), type(value).__name__)
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} {shown}" if value is not None else "null"


def _is_identifier(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name) and name.isascii()


# --------------------------------------------------------------------------- type checking


def _load_field_types() -> ModuleType:
    """components/field_types.py, the type rules the emitted script's flags use too.

    Loaded from its file, not imported as `components.field_types`: the package's other
    modules need torch, and `sigmae-gen build` runs without it. The file may import only the
    standard library, which is checked here before it runs.
    """
    path = Path(__file__).resolve().parent.parent / "components" / "field_types.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    outside = sorted(name for name in imported if name.split(".")[0] not in sys.stdlib_module_names)
    if outside:
        raise ImportError(f"{path} must import only the standard library (the generator loads it without torch); it imports {', '.join(outside)}")
    loader_spec = importlib.util.spec_from_file_location("_sigmae_field_types", path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[loader_spec.name] = module  # dataclasses look their module up while the file runs
    loader_spec.loader.exec_module(module)
    return module


FIELD_TYPES = _load_field_types()
# An annotation's rule depends on its text only (FieldType is frozen): read each text once.
_field_type = lru_cache(maxsize=4096)(FIELD_TYPES.field_type)
_Mismatch = FIELD_TYPES.Mismatch


def _annotation_tree(annotation: str) -> ast.expr | None:
    try:
        return ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return None


def conform(value: Any, annotation: str | None) -> Any:
    """`value` converted to what `annotation` declares (lists -> tuples, ints -> floats).

    Raises `_Mismatch` when it does not fit. Unknown annotations accept any YAML value:
    the catalog contract limits schema types, and the runtime still sees the value. The
    rules are components/field_types.py's, which the emitted script's flags apply too.
    """
    return FIELD_TYPES.conform(value, _field_type(annotation))


def default_value(component: Component, param: Param) -> Any:
    """The Python value of a parameter's signature default (catalog defaults are literals)."""
    assert param.default is not None
    tree = _annotation_tree(param.default)
    try:
        value = _literal(tree) if tree is not None else None
    except ValueError:
        raise SpecError(
            f"default of {component.qualname}({param.name}=...) is {param.default!r}, not a literal; "
            "catalog defaults must be literals (components/README.md §1)",
            str(component.path),
            param.lineno,
            1,
        ) from None
    try:
        return conform(value, param.annotation)
    except _Mismatch:
        return value


def _literal(node: ast.expr) -> Any:
    """ast.literal_eval plus `float("inf")`-style calls, which catalogs use for infinities."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float" and len(node.args) == 1 and not node.keywords:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return float(arg.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(item) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in ("inf", "nan", "pi", "e"):
        return getattr(math, node.attr)
    return ast.literal_eval(node)


# --------------------------------------------------------------------------- documents


def _merge(base: Node, child: Node) -> Node:
    """Child over base: mappings merge key by key; everything else is replaced.

    A component section whose `use:` changes is replaced whole, so a base's `with:` block
    never leaks into a different component.
    """
    if not (base.is_mapping and child.is_mapping):
        return child
    base_use = base.value.get("use")
    child_use = child.value.get("use")
    if base_use is not None and child_use is not None and base_use.plain() != child_use.plain():
        return child
    merged = dict(base.value)
    key_locs = dict(base.key_locs)
    for key, value in child.value.items():
        merged[key] = _merge(base.value[key], value) if key in base.value else value
        key_locs[key] = child.key_locs.get(key, value.loc)
    return Node(merged, child.loc, key_locs)


def _read_document(path: Path, display: str, chain: tuple[Path, ...], files: list[SpecFile], extends_loc: Location | None) -> Node:
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError):  # a symbolic link loop (RuntimeError before Python 3.13)
        where = extends_loc or Location(display, 1, 1)
        raise where.error(f"spec file {display!r} is a symbolic link loop; point at a real YAML file") from None
    if len(chain) >= _MAX_EXTENDS:
        assert extends_loc is not None
        raise extends_loc.error(f"the extends: chain is longer than {_MAX_EXTENDS} files; let a spec extend a base directly instead of through a chain")
    if resolved in chain:
        cycle = " -> ".join([*(p.name for p in chain), resolved.name])
        assert extends_loc is not None
        raise extends_loc.error(f"extends cycle: {cycle}; remove one of these extends: lines")
    try:
        data = resolved.read_bytes()
    except FileNotFoundError:
        if extends_loc is not None:
            raise extends_loc.error(f"extends: file {display!r} not found (looked at {path}); fix the path, relative to this spec's folder") from None
        raise SpecError(f"spec file {str(path)!r} not found; check the path", str(path), None, None) from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        where = extends_loc or Location(display, 1, 1)
        raise where.error(f"cannot read spec file {display!r}: {exc.strerror or exc}; point at a readable YAML file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"spec is not UTF-8 text (byte {exc.start}); save it as UTF-8", display, 1, 1) from None
    files.append(SpecFile(display, resolved, hashlib.sha256(data).hexdigest()))
    root = parse_yaml(text, display)
    if root is None:
        raise SpecError("the spec is empty; start with `name: <identifier>` and the data/transform/model/recipe sections", display, 1, 1)
    if not root.is_mapping:
        raise root.loc.error(f"a spec must be a mapping (name:, data:, model:, ...), got {_describe(root.plain())}; write `key: value` lines at the top level")
    extends = root.value.get("extends")
    if extends is None:
        return root
    if not isinstance(extends.value, str) or not extends.value.strip():
        raise extends.loc.error(f"extends: must be a relative file path, got {_describe(extends.plain())}; write `extends: base.yaml`")
    base_path = resolved.parent / extends.value
    base_display = str(Path(display).parent / extends.value) if Path(display).parent != Path(".") else extends.value
    base = _read_document(base_path, base_display, (*chain, resolved), files, extends.loc)
    own = Node({k: v for k, v in root.value.items() if k != "extends"}, root.loc, {k: v for k, v in root.key_locs.items() if k != "extends"})
    return _merge_document(base, own)  # `base` is already merged with its own bases: it holds no `extends`


def _step_name(item: Node) -> Any:
    """A recipe step's name as written (`name:`, else `use:`), None when it has neither."""
    if not item.is_mapping:
        return None
    name_node = item.value.get("name") or item.value.get("use")
    if name_node is None or not isinstance(name_node.value, str):
        return None  # not a name: validation reports it at its place
    return name_node.value


def _merge_document(base: Node, own: Node) -> Node:
    """A spec over its `extends:` base (components/README.md §4, "extends:").

    Sections merge as `_merge` does. `recipe:` as a list replaces the base's whole list; as a
    mapping `{step name: null | {with: ...}}` it edits the base's steps by name: `null` removes
    the step, a mapping merges into it (the base's order is kept). Either way, the base's
    `smoke:` entries for steps the result no longer has are dropped.
    """
    base_recipe = base.value.get("recipe")
    own_recipe = own.value.get("recipe")
    if own_recipe is not None and own_recipe.is_mapping:
        own = Node({**own.value, "recipe": _edit_steps(base_recipe, own_recipe, own.key_locs["recipe"])}, own.loc, own.key_locs)
    merged = _merge(base, own)
    base_steps = {_step_name(item) for item in base_recipe.value} if base_recipe is not None and base_recipe.is_sequence else set()
    recipe = merged.value.get("recipe")
    steps = {_step_name(item) for item in recipe.value} if recipe is not None and recipe.is_sequence else set()
    gone = base_steps - steps
    smoke = merged.value.get("smoke")
    base_smoke = base.value.get("smoke")
    own_smoke = own.value.get("smoke")
    if gone and smoke is not None and smoke.is_mapping and base_smoke is not None and base_smoke.is_mapping:
        own_keys = set(own_smoke.value) if own_smoke is not None and own_smoke.is_mapping else set()
        dropped = {key for key in smoke.value if key in gone and key in base_smoke.value and key not in own_keys}
        if dropped:
            kept = Node({k: v for k, v in smoke.value.items() if k not in dropped}, smoke.loc, {k: v for k, v in smoke.key_locs.items() if k not in dropped})
            merged = Node({**merged.value, "smoke": kept}, merged.loc, merged.key_locs)
    return merged


def _edit_steps(base_recipe: Node | None, edits: Node, where: Location) -> Node:
    """The base's recipe list with `edits` (step name -> null or changes) applied by name."""
    if base_recipe is None or not base_recipe.is_sequence:
        raise where.error("recipe: as a mapping (step name: null or changes) edits the extends: base's steps, but the base has no recipe: list; write recipe: as a list of steps")
    items = list(base_recipe.value)
    names = [_step_name(item) for item in items]
    shown = ", ".join(str(name) for name in names) or "(none)"
    for name, change in edits.value.items():
        loc = edits.key_locs[name]
        if name not in names:
            verb = "remove" if change.value is None else "change"
            raise loc.error(
                f"recipe: cannot {verb} step {name!r}: the extends: base has no step of that name.{did_you_mean(name, [str(n) for n in names])} "
                f"Its steps: {shown} (to add steps, write recipe: as the whole list)"
            )
        position = names.index(name)
        if change.value is None:
            del items[position], names[position]
            continue
        if not change.is_mapping:
            raise change.loc.error(f"recipe.{name} must be null (remove the step) or a mapping like {{with: {{epochs: 5}}}}, got {_describe(change.plain())}")
        renamed = change.value.get("name")
        if renamed is not None and renamed.value != name:
            raise renamed.loc.error(f"recipe.{name} cannot rename the step (to {renamed.value!r}); write recipe: as the whole list to rename steps")
        items[position] = _merge(items[position], change)
    if not items:
        raise where.error("recipe: removes every step of the extends: base; keep at least one, or write recipe: as a list")
    return Node(items, edits.loc)


def apply_override(root: Node, override: str) -> Node:
    """Apply one `--set key.path=value` (value typed by YAML rules) to the document tree."""
    shown = override if isinstance(override, str) and override.isprintable() else repr(override)
    file = f"<--set {shown}>"  # one line, whatever the argument holds
    start = Location(file, 1, 1)
    if not isinstance(override, str) or "=" not in override:
        raise start.error("--set needs KEY=VALUE, e.g. --set model.with.embed_dim=384")
    path_text, value_text = override.split("=", 1)
    keys = path_text.strip().split(".")
    if not path_text.strip() or any(not key for key in keys):
        raise start.error(f"--set key path {path_text!r} is empty or has an empty part; write it like model.with.embed_dim")
    if keys[0] == "extends":
        raise start.error(
            "--set cannot change extends: (the extends: chain is read before --set applies); "
            "edit the spec's extends: line, or write a spec that extends the one you want"
        )
    value_column = len(path_text) + 1
    if "\n" in value_text or "\r" in value_text:
        raise Location(file, 1, value_column + 1).error("--set values must be one line; use a spec file for longer values")
    parsed = parse_yaml(value_text, file, column_offset=value_column) if value_text.strip() else Node("", Location(file, 1, value_column + 1))
    if parsed is None:
        parsed = Node(None, Location(file, 1, value_column + 1))
    return _set_path(root, keys, parsed, start, path_text)


def _set_path(node: Node, keys: list[str], value: Node, loc: Location, path_text: str) -> Node:
    if not keys:
        return value
    key, rest = keys[0], keys[1:]
    if node.is_sequence:
        items = list(node.value)
        index = _sequence_index(items, key, loc, path_text)
        items[index] = _set_path(items[index], rest, value, loc, path_text)
        return Node(items, node.loc)
    if not node.is_mapping:
        raise loc.error(f"--set {path_text}: {key!r} goes into {_describe(node.plain())}, which has no keys; shorten the path")
    children = dict(node.value)
    child = children.get(key, Node({}, loc))
    children[key] = _set_path(child, rest, value, loc, path_text)
    key_locs = dict(node.key_locs)
    key_locs.setdefault(key, loc)
    return Node(children, node.loc, key_locs)


def _sequence_index(items: list[Node], key: str, loc: Location, path_text: str) -> int:
    if key.isdigit():
        index = int(key)
        if index < len(items):
            return index
        raise loc.error(f"--set {path_text}: index {index} is out of range (the list has {len(items)} items)")
    names = []
    for index, item in enumerate(items):
        if item.is_mapping:
            name_node = item.value.get("name") or item.value.get("use")
            name = name_node.value if name_node is not None else None
            names.append(str(name))
            if name == key:
                return index
    raise loc.error(f"--set {path_text}: no list item named {key!r}.{did_you_mean(key, names)} Use an index (0, 1, ...) or a step name: {', '.join(names) or '(none)'}")


def load_document(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Node, tuple[SpecFile, ...]]:
    """Read a spec and its `extends:` chain, merge them, and apply `--set` overrides."""
    path = Path(path)
    files: list[SpecFile] = []
    root = _read_document(path, path.name, (), files, None)
    for override in overrides:
        root = apply_override(root, override)
    return root, tuple(files)


# --------------------------------------------------------------------------- validation


def load_spec(path: str | Path, index: CatalogLookup, overrides: Sequence[str] = ()) -> Spec:
    """Load, merge and validate a spec against the catalog index. Raises `SpecError`."""
    path = Path(path)
    root, files = load_document(path, overrides)
    return validate(root, index, path=path, files=files, overrides=tuple(overrides))


def validate(root: Node, index: CatalogLookup, *, path: Path, files: tuple[SpecFile, ...] = (), overrides: tuple[str, ...] = ()) -> Spec:
    """Check a merged document against the schema and the catalog; return the typed `Spec`."""
    doc = root.value
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            recipe = doc.get("recipe")
            if recipe is not None and recipe.is_sequence and key in {_step_name(item) for item in recipe.value}:
                hint = f" {key!r} is a recipe step: change it under recipe: (with extends:, `recipe: {{{key}: null}}` removes it, `recipe: {{{key}: {{with: ...}}}}` changes it)."
            else:
                hint = did_you_mean(key, TOP_LEVEL_KEYS)
            raise root.key_locs[key].error(f"unknown section {key!r}.{hint} Allowed: {', '.join(TOP_LEVEL_KEYS)}")

    name_node = _required(root, "name", "name: my_experiment  # a Python identifier; names the output files")
    name = name_node.value
    if not _is_identifier(name):
        raise name_node.loc.error(f"name must be a Python identifier (letters, digits, _; not a keyword), got {_describe(name_node.plain())}; e.g. name: esc50_audiomae")
    if name in SHADOWED_MODULES or name.startswith("test_"):
        raise name_node.loc.error(f"name {name!r} would shadow a Python module (or look like a test); choose another, e.g. name: {name}_mae")

    description = ""
    if "description" in doc:
        desc_node = doc["description"]
        if desc_node.value is not None and not isinstance(desc_node.value, str):
            raise desc_node.loc.error(f"description must be text, got {_describe(desc_node.plain())}; quote it")
        description = desc_node.value or ""

    data = _component_section(root, "data", "data", index)
    transform = _component_section(root, "transform", "transform", index)
    model = _component_section(root, "model", "model", index)
    steps = _recipe_steps(root, index)

    smoke_data, smoke = _smoke(root, index, {choice.section: choice for choice in (data, transform, model, *steps)})
    outputs = _outputs(root)
    return Spec(
        name=name,
        description=description,
        path=path,
        files=files,
        overrides=overrides,
        data=data,
        transform=transform,
        model=model,
        steps=steps,
        smoke_data=smoke_data,
        smoke=smoke,
        outputs=outputs,
    )


def _required(parent: Node, key: str, example: str) -> Node:
    if key not in parent.value:
        raise parent.loc.error(f"missing required key {key!r}; add `{example}`")
    return parent.value[key]


def _lookup(index: CatalogLookup, kind: str, use: Node) -> Component:
    if not isinstance(use.value, str) or not use.value:
        raise use.loc.error(f"use: must name a registered {kind}, got {_describe(use.plain())}; run `sigmae-gen list --kind {kind}`")
    component = index.components.get((kind, use.value))
    if component is not None:
        return component
    known = sorted(c.name for c in index.components_of(kind))
    raise use.loc.error(
        f"unknown {kind} {use.value!r}.{did_you_mean(use.value, known)} Known {kind}s: {', '.join(known) or '(none)'}"
    )


def _component_section(root: Node, section: str, kind: str, index: CatalogLookup) -> Choice:
    node = _required(root, section, f"{section}: {{use: <{kind} name>, with: {{...}}}}")
    return _choice(node, section, kind, index, allowed_keys=("use", "with"))


def _choice(node: Node, section: str, kind: str, index: CatalogLookup, *, allowed_keys: tuple[str, ...], where: str | None = None) -> Choice:
    """The component a section names, with typed values; `where` is its path in messages (default: `section`)."""
    where = where or section
    if not node.is_mapping:
        raise node.loc.error(f"{where}: must be a mapping like {{use: <{kind} name>, with: {{...}}}}, got {_describe(node.plain())}")
    for key in node.value:
        if key not in allowed_keys:
            raise node.key_locs[key].error(f"unknown key {key!r} in {where}.{did_you_mean(key, allowed_keys)} Allowed: {', '.join(allowed_keys)}")
    use = _required(node, "use", f"use: <{kind} name>  # see `sigmae-gen list --kind {kind}`")
    component = _lookup(index, kind, use)
    with_node = node.value.get("with")
    given: dict[str, Node] = {}
    given_locs: dict[str, Location] = {}
    if with_node is not None and with_node.value is not None:
        if not with_node.is_mapping:
            raise with_node.loc.error(f"{where}.with must be a mapping of parameter: value, got {_describe(with_node.plain())}")
        given, given_locs = with_node.value, with_node.key_locs
    values = _typed_values(component, given, given_locs, f"{where}.with", use.loc, complete=True)
    return Choice(section, component, values, frozenset(given), use.loc)


def _typed_values(component: Component, given: Mapping[str, Node], locs: Mapping[str, Location], where: str, use_loc: Location, *, complete: bool) -> dict[str, Any]:
    """Typed parameter values: given ones checked, missing ones defaulted (when `complete`)."""
    params = {param.name: param for param in component.params}
    for key in given:
        if key not in params:
            names = sorted(params)
            raise locs[key].error(
                f"unknown parameter {key!r} for {component.kind} {component.name!r} in {where}.{did_you_mean(key, names)} "
                f"Parameters: {', '.join(names) or '(none)'}"
            )
    values: dict[str, Any] = {}
    for param in component.params:
        if param.name in given:
            values[param.name] = check_value(given[param.name], param, component)
        elif complete:
            if param.required:
                ann = f" ({param.annotation})" if param.annotation else ""
                raise use_loc.error(
                    f"{component.kind} {component.name!r} needs parameter {param.name!r}{ann}; add `{param.name}: ...` under {where}"
                )
            values[param.name] = default_value(component, param)
    return values


def check_value(node: Node, param: Param, component: Component) -> Any:
    """A spec value converted to the parameter's annotation, or a SpecError saying what fits."""
    value = node.plain()
    try:
        typed = conform(value, param.annotation)
    except _Mismatch:
        raise node.loc.error(
            f"{param.name} of {component.kind} {component.name!r} must be {_expected(param.annotation)}, got {_describe(value)}; "
            f"write {_expected(param.annotation)} there (signature: {component.path.as_posix()}:{param.lineno})"
        ) from None
    if _non_finite(typed, allow_infinity=_infinite_default(component, param)):
        raise node.loc.error(
            f"{param.name} of {component.kind} {component.name!r} must be a finite number, got {_describe(value)}; "
            f"write a finite number there (signature: {component.path.as_posix()}:{param.lineno})"
        )
    return typed


def _non_finite(value: Any, *, allow_infinity: bool = False) -> bool:
    """Whether `value` is, or holds, NaN (or an infinity, unless `allow_infinity`)."""
    if isinstance(value, float):
        return math.isnan(value) or (math.isinf(value) and not allow_infinity)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(item, allow_infinity=allow_infinity) for item in value)
    if isinstance(value, dict):
        return any(_non_finite(item, allow_infinity=allow_infinity) for item in value.values())
    return False


def _infinite_default(component: Component, param: Param) -> bool:
    """Whether the signature default holds an infinity (`limit: float = float("inf")`): there
    an infinity is a meaningful value; elsewhere a number must be finite."""
    if param.required:
        return False
    try:
        default = default_value(component, param)
    except SpecError:
        return False
    return _non_finite(default)


def _expected(annotation: str | None) -> str:
    """Human wording of an annotation: Literal choices spelled out, other types as written."""
    rule = _field_type(annotation)
    if rule.kind == "literal":
        return "one of " + ", ".join(repr(choice) for choice in rule.choices)
    return _SCALAR_WORDS.get(str(annotation), str(annotation))


_SCALAR_WORDS = {"int": "an integer (int)", "float": "a number (float)", "bool": "true or false (bool)", "str": "a string (str)"}


def _recipe_steps(root: Node, index: CatalogLookup) -> tuple[Choice, ...]:
    node = _required(root, "recipe", "recipe: [{use: <recipe name>, name: <step name>, with: {...}}]")
    if node.is_mapping:
        raise node.loc.error(
            "recipe: as a mapping (step name: null or changes) only edits the steps of an extends: base, "
            "and this spec has none; write recipe: as a list of steps like - {use: mae_pretrain, name: pretrain}"
        )
    if not node.is_sequence or not node.value:
        raise node.loc.error(f"recipe: must be a non-empty list of steps like - {{use: mae_pretrain, name: pretrain}}, got {_describe(node.plain())}")
    steps: list[Choice] = []
    seen: dict[str, Location] = {}
    class_names: dict[str, str] = {}
    for item in node.value:
        if not item.is_mapping:
            raise item.loc.error(f"each recipe step must be a mapping like {{use: mae_pretrain, name: pretrain}}, got {_describe(item.plain())}")
        name_node = item.value.get("name") or item.value.get("use")
        if name_node is None:
            raise item.loc.error("recipe step needs use: <recipe name>; see `sigmae-gen list --kind recipe`")
        step_name = name_node.value
        if not _is_identifier(step_name):
            raise name_node.loc.error(f"step name must be a Python identifier, got {_describe(name_node.plain())}; set `name: <identifier>` on this step")
        if step_name in RESERVED_SECTIONS:
            raise name_node.loc.error(f"step name {step_name!r} is reserved (it is a config section); set another `name:` on this step")
        if step_name in seen:
            raise name_node.loc.error(f"duplicate step name {step_name!r} (first at line {seen[step_name].line}); give each step its own `name:`")
        class_name = section_class_name(step_name)
        if class_name in class_names:
            raise name_node.loc.error(f"step names {class_names[class_name]!r} and {step_name!r} give the same config class {class_name}; rename one")
        seen[step_name] = name_node.loc
        class_names[class_name] = step_name
        steps.append(_choice(item, step_name, "recipe", index, allowed_keys=("use", "name", "with")))
    return tuple(steps)


def _smoke(root: Node, index: CatalogLookup, sections: dict[str, Choice]) -> tuple[Choice | None, dict[str, dict[str, Any]]]:
    node = root.value.get("smoke")
    if node is None or node.value is None:
        return None, {}
    if not node.is_mapping:
        raise node.loc.error(f"smoke: must be a mapping of section: overrides, got {_describe(node.plain())}")
    smoke_data: Choice | None = None
    smoke: dict[str, dict[str, Any]] = {}
    for key, child in node.value.items():
        loc = node.key_locs[key]
        if key == "data":
            if not child.is_mapping or "use" not in child.value:
                raise child.loc.error("smoke.data must name the synthetic data set: {use: <data name>, with: {...}}")
            smoke_data = _choice(child, "data", "data", index, allowed_keys=("use", "with"), where="smoke.data")
            smoke["data"] = {param: smoke_data.values[param] for param in sorted(smoke_data.from_spec)}
            continue
        if key not in sections:
            options = [s for s in sections if s != "data"]
            raise loc.error(f"smoke: unknown section {key!r}.{did_you_mean(key, options)} Sections: data, {', '.join(options)}")
        if child.value is None:
            continue
        if not child.is_mapping:
            raise child.loc.error(f"smoke.{key} must be a mapping of parameter: value, got {_describe(child.plain())}")
        choice = sections[key]
        smoke[key] = _typed_values(choice.component, child.value, child.key_locs, f"smoke.{key}", child.loc, complete=False)
    return smoke_data, smoke


def _outputs(root: Node) -> tuple[str, ...]:
    node = root.value.get("outputs")
    if node is None or node.value is None:
        return OUTPUT_KINDS
    if not node.is_sequence or not node.value:
        raise node.loc.error(f"outputs: must be a list from {list(OUTPUT_KINDS)}, got {_describe(node.plain())}")
    chosen: list[str] = []
    for item in node.value:
        if item.value not in OUTPUT_KINDS:
            shown = item.value if isinstance(item.value, str) else ""
            raise item.loc.error(f"unknown output {item.plain()!r}.{did_you_mean(shown, OUTPUT_KINDS)} Choose from: {', '.join(OUTPUT_KINDS)}")
        if item.value in chosen:
            raise item.loc.error(f"output {item.value!r} is listed twice; list it once")
        chosen.append(item.value)
    if "script" not in chosen:
        raise node.loc.error("outputs: must include script (the notebook and tests are built from it); add script to the list")
    return tuple(kind for kind in OUTPUT_KINDS if kind in chosen)
