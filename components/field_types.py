"""The type rules of config fields: one source for the spec check and the command line.

A field's annotation text (``"int | None"``, ``"tuple[int, int]"``, ``"Literal['a', 'b']"``)
reads into a ``FieldType``. ``conform`` says whether a value (from a YAML spec, or from a
spec's smoke block at run time) fits it, and brings it to the declared type (lists ->
tuples, ints -> floats); ``read_tokens`` reads the tokens after a command-line flag and
hands what they spell to ``conform``, so a flag can only ever produce a value the spec
check accepts. The generator loads this file on its own (it must run without torch), so
it imports the standard library only.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Words a flag reads as null (YAML's `null`, and Python's `none`) and as booleans: the
# words PyYAML reads as booleans in a spec (`1` is a number there, `y` a string).
NONE_WORDS = ("none", "null")
TRUE_WORDS = ("true", "yes", "on")
FALSE_WORDS = ("false", "no", "off")
SEQUENCE_KINDS = ("tuple", "list", "sequence")


class Mismatch(ValueError):
    """A value or a command-line token that does not fit its field's type."""


@dataclass(frozen=True)
class FieldType:
    """One annotation form, read from its source text.

    ``kind`` is int, float, bool, str, none, literal (``choices``), tuple (``args``, or one
    arg and ``variadic`` for ``tuple[X, ...]``), list, sequence (read as a tuple), dict
    (key and value), union (``args`` in order), or any (``Any``, or a name these rules do
    not cover: every value fits, and the command line cannot read it).
    """

    kind: str
    args: tuple[FieldType, ...] = ()
    choices: tuple[Any, ...] = ()
    variadic: bool = False
    text: str = field(default="", compare=False)

    def without_none(self) -> tuple[FieldType, bool]:
        """``X | None`` -> (X, True); any other type -> (itself, False)."""
        if self.kind == "union" and len(self.args) == 2:
            rest = [arg for arg in self.args if arg.kind != "none"]
            if len(rest) == 1:
                return rest[0], True
        return self, False


ANY = FieldType("any", text="Any")


def field_type(annotation: str | None) -> FieldType:
    """The ``FieldType`` of an annotation's source text (``any`` when absent or unreadable)."""
    if annotation is None:
        return ANY
    try:
        tree = ast.parse(annotation.strip(), mode="eval").body
    except SyntaxError:
        return ANY
    return _read(tree)


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # typing.Optional, t.Literal
        return node.attr
    return None


def _read(node: ast.expr) -> FieldType:
    text = ast.unparse(node)
    if isinstance(node, ast.Constant):
        if node.value is None:
            return FieldType("none", text=text)
        if isinstance(node.value, str):  # a quoted forward reference: "tuple[int, int]"
            return field_type(node.value)
        return FieldType("any", text=text)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        options = (_read(node.left), _read(node.right))
        flat = [arg for option in options for arg in _union_args(option)]
        return FieldType("union", tuple(flat), text=text)
    if isinstance(node, ast.Subscript):
        return _read_subscript(node, text)
    name = _base_name(node)
    if name in ("int", "float", "bool", "str"):
        return FieldType(name, text=text)
    if name == "None":
        return FieldType("none", text=text)
    if name in ("tuple", "Tuple"):
        return FieldType("tuple", (ANY,), variadic=True, text=text)
    if name in ("list", "List"):
        return FieldType("list", (ANY,), text=text)
    if name in ("dict", "Dict", "Mapping"):
        return FieldType("dict", (ANY, ANY), text=text)
    return FieldType("any", text=text)


def _union_args(option: FieldType) -> tuple[FieldType, ...]:
    return option.args if option.kind == "union" else (option,)


def _read_subscript(node: ast.Subscript, text: str) -> FieldType:
    inner = node.slice
    parts = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
    name = _base_name(node.value)
    if name == "Optional":
        return FieldType(
            "union", (FieldType("none", text="None"), *map(_read, parts)), text=text
        )
    if name == "Union":
        return FieldType("union", tuple(map(_read, parts)), text=text)
    if name == "Literal":
        choices = []
        for part in parts:
            try:
                choices.append(ast.literal_eval(part))
            except ValueError:
                continue
        return FieldType("literal", choices=tuple(choices), text=text)
    if name in ("tuple", "Tuple"):
        last = parts[-1]
        if (
            len(parts) == 2
            and isinstance(last, ast.Constant)
            and last.value is Ellipsis
        ):
            return FieldType("tuple", (_read(parts[0]),), variadic=True, text=text)
        if len(parts) == 1 and isinstance(last, ast.Tuple) and not last.elts:
            return FieldType("tuple", (), text=text)  # tuple[()]
        return FieldType("tuple", tuple(map(_read, parts)), text=text)
    if name in ("list", "List", "Sequence"):
        kind = "sequence" if name == "Sequence" else "list"
        return FieldType(kind, (_read(parts[0]),), text=text)
    if name in ("dict", "Dict", "Mapping"):
        args = tuple(map(_read, parts)) if len(parts) == 2 else (ANY, ANY)
        return FieldType("dict", args, text=text)
    return FieldType("any", text=text)


# --------------------------------------------------------------------------- values


def conform(value: Any, rule: FieldType) -> Any:
    """``value`` brought to ``rule``'s type (lists -> tuples, ints -> floats), or ``Mismatch``."""
    kind = rule.kind
    if kind == "any":
        return value
    if kind == "union":
        for option in rule.args:  # in order, so `int | float` keeps an int an int
            try:
                return conform(value, option)
            except Mismatch:
                continue
        raise Mismatch(f"expected {rule.text}, got {value!r}")
    if kind in SEQUENCE_KINDS or kind == "dict":
        return _conform_container(value, rule)
    return _conform_scalar(value, rule)


def _conform_scalar(value: Any, rule: FieldType) -> Any:
    kind = rule.kind
    if kind == "none" and value is None:
        return None
    if kind == "literal":
        for allowed in rule.choices:
            if type(allowed) is type(value) and allowed == value:
                return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if (
        kind == "float"
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ):
        return float(value)
    if kind == "float" and isinstance(value, str):
        # PyYAML reads `1e-4` (no dot) as a string; a float field clearly means the number.
        try:
            return float(value.strip())
        except ValueError:
            pass
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    raise Mismatch(f"expected {rule.text}, got {value!r}")


def _conform_container(value: Any, rule: FieldType) -> Any:
    if rule.kind == "dict":
        if not isinstance(value, dict):
            raise Mismatch(f"expected {rule.text}, got {value!r}")
        key, item = rule.args
        return {conform(k, key): conform(v, item) for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        raise Mismatch(f"expected {rule.text}, got {value!r}")
    if rule.kind == "tuple" and not rule.variadic:
        if len(value) != len(rule.args):
            raise Mismatch(f"expected {len(rule.args)} values, got {len(value)}")
        return tuple(conform(item, part) for item, part in zip(value, rule.args))
    items = [conform(item, rule.args[0]) for item in value]
    return items if rule.kind == "list" else tuple(items)


# --------------------------------------------------------------------------- command line


def read_tokens(tokens: Sequence[str], rule: FieldType) -> Any:
    """The value the tokens after a flag spell, conformed to ``rule``.

    A sequence reads ``64 128`` and ``64,128`` alike; an optional field reads ``none`` (or
    ``null``) as None. ``TypeError`` for a type the command line cannot read (``any``, dict).
    """
    inner, optional = rule.without_none()
    if optional and len(tokens) == 1 and tokens[0].strip().lower() in NONE_WORDS:
        return None
    if inner.kind in SEQUENCE_KINDS:
        items = [part for token in tokens for part in token.split(",") if part != ""]
        fixed = inner.kind == "tuple" and not inner.variadic
        if fixed and len(items) != len(inner.args):
            got = f"{len(items)}: {' '.join(tokens)}"
            raise Mismatch(f"expected {len(inner.args)} values, got {got}")
        kinds = inner.args if fixed else inner.args * len(items)
        # a bare `list` / `tuple` holds any value: a token stays its text
        values = [
            t if k.kind == "any" else read_text(t, k) for k, t in zip(kinds, items)
        ]
        return conform(values, inner)
    if len(tokens) != 1:
        raise Mismatch(f"expected one value, got {len(tokens)}")
    return conform(read_text(tokens[0], inner), inner)


def read_text(text: str, rule: FieldType) -> Any:
    """What one command-line token means for a scalar ``rule`` (before ``conform``)."""
    kind = rule.kind
    if kind == "union":
        if text.strip().lower() in NONE_WORDS and any(
            a.kind == "none" for a in rule.args
        ):
            return None
        errors = []
        for option in (arg for arg in rule.args if arg.kind != "none"):
            try:
                return conform(read_text(text, option), option)
            except Mismatch as error:
                errors.append(error)
        raise errors[0] if errors else Mismatch(f"expected {rule.text}, got {text!r}")
    if kind == "none":
        if text.strip().lower() in NONE_WORDS:
            return None
        raise Mismatch(f"expected none, got {text!r}")
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in TRUE_WORDS or lowered in FALSE_WORDS:
            return lowered in TRUE_WORDS
        raise Mismatch(f"expected true or false, got {text!r}")
    if kind in ("int", "float"):
        try:
            return int(text) if kind == "int" else float(text)
        except ValueError:
            raise Mismatch(f"expected {kind}, got {text!r}") from None
    if kind == "str":
        return text
    if kind == "literal":
        for choice in rule.choices:
            if str(choice) == text:
                return choice
        choices = ", ".join(map(str, rule.choices))
        raise Mismatch(f"expected one of {choices}, got {text!r}")
    raise TypeError(
        f"unsupported config field type {rule.text!r} "
        "(int, float, bool, str, Literal, tuple, list, Optional)"
    )
