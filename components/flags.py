"""Command-line flags of the emitted script, generated from its ``Config`` dataclass.

Every field of every section becomes a flag typed from its annotation: the ``run`` section
gives ``--smoke --data-dir --out-dir ...``, every other section ``--<section>.<field>``
(``--model.img_size 64 128``, ``--finetune.epochs 5``, ``--pretrain.lr none``). Annotations
are strings (``from __future__ import annotations``), so they are resolved with
``typing.get_type_hints``. Defaults are shown in ``--help`` but never set by argparse, so
``parse_config`` knows which flags were given and can apply, in order: the dataclass
defaults, the spec's ``--smoke`` overrides, then the explicit flags.

A flag's help is its field's ``metadata["help"]``, else the field's entry in the ``Args:``
section of its section class's docstring. A boolean reads ``--smoke`` / ``--no-smoke``
(``--smoke false`` still works).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Optional

from components.errors import UsageError
from components.field_types import FieldType, Mismatch, conform, field_type, read_tokens

DEFAULT_SMOKE_STEPS = 2


_ARGS_HEADERS = ("Args:", "Arguments:")
_ARG_ENTRY = re.compile(
    r"\*{0,2}(?P<name>[A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:(?:\s+(?P<text>.*))?$"
)


def docstring_args(doc: str | None) -> dict[str, str]:
    """Field name -> its one-line description, from a Google-style ``Args:`` section.

    An entry is ``name: text`` at the section's first indentation; deeper lines continue
    it; the section ends at the first line indented no deeper than its ``Args:`` header.
    """
    found: dict[str, str] = {}
    header = entry = None
    current = None
    for line in inspect.cleandoc(doc or "").splitlines():
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        if header is None:
            header = indent if stripped in _ARGS_HEADERS else None
        elif stripped and indent <= header:
            break
        elif stripped:
            entry = indent if entry is None else entry
            match = _ARG_ENTRY.match(stripped) if indent == entry else None
            if match is not None:
                current = match["name"]
                found[current] = (match["text"] or "").strip()
            elif current is not None and indent > entry:
                found[current] = f"{found[current]} {stripped}".strip()
    return found


def _resolve_hints(cls: type) -> dict[str, Any]:
    """Field types of a dataclass whose annotations are strings (``from __future__ import annotations``)."""
    extra = {"Literal": Literal, "Optional": Optional, "Any": Any}
    try:
        return typing.get_type_hints(cls, localns=extra)
    except NameError as error:
        raise TypeError(
            f"cannot resolve the field types of {cls.__name__}: {error}"
        ) from None


@dataclass(frozen=True)
class FlagSpec:
    """How one config field reads from the command line."""

    section: str
    name: str
    annotation: Any
    default: Any
    help: str = ""

    @property
    def dest(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def flag(self) -> str:
        if self.section == "run":
            return "--" + self.name.replace("_", "-")
        return f"--{self.section}.{self.name}"

    @cached_property
    def rule(self) -> FieldType:
        """The field's type rule (components/field_types.py, shared with the spec check)."""
        return field_type(_type_label(self.annotation))

    @property
    def is_bool(self) -> bool:
        return self.rule.without_none()[0].kind == "bool"

    @property
    def takes_sequence(self) -> bool:
        return self.rule.without_none()[0].kind in ("tuple", "list", "sequence")

    @property
    def metavar(self) -> str:
        """What the value is: N, X, DIR, PATH, TEXT, or the field's name (Literal, tuples: V)."""
        inner = self.rule.without_none()[0].kind
        if self.takes_sequence:
            return "V"
        if inner == "int":
            return "N"
        if inner == "float":
            return "X"
        if inner == "str":
            if self.name.endswith("dir"):
                return "DIR"
            if self.name == "root" or self.name.endswith(
                ("path", "file", "checkpoint")
            ):
                return "PATH"
            if self.name.endswith("url"):
                return "URL"
            return "TEXT"
        return self.name.upper()

    def convert(self, tokens: list[str]) -> Any:
        """Turn the tokens after the flag into a value of the field's type."""
        try:
            return read_tokens(tokens, self.rule)
        except Mismatch as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    def coerce(self, value: Any) -> Any:
        """Bring a literal from the spec's smoke block to the field's type (lists -> tuples)."""
        try:
            return conform(value, self.rule)
        except Mismatch:
            return value  # the spec check has already said what fits


class _FlagAction(argparse.Action):
    def __init__(
        self, option_strings: list[str], dest: str, spec: FlagSpec, **kwargs: Any
    ) -> None:
        self.spec = spec
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: Any,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        tokens = (
            [] if values is None else (values if isinstance(values, list) else [values])
        )
        try:
            value = self.spec.convert(tokens)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentError(self, str(error)) from None
        setattr(namespace, self.dest, value)


class _BoolFlagAction(argparse.BooleanOptionalAction):
    """``--smoke`` / ``--no-smoke``; ``--smoke true|false`` (and ``none`` when optional) still parse."""

    def __init__(
        self, option_strings: list[str], dest: str, spec: FlagSpec, **kwargs: Any
    ) -> None:
        kwargs.pop("nargs", None)
        kwargs.pop("metavar", None)
        super().__init__(option_strings, dest, **kwargs)
        self.nargs = (
            "?"  # an optional value: "--compile false" from older command lines
        )
        self.spec = spec

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: Any,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        negative = option_string is not None and option_string.startswith("--no-")
        if values is None:
            value: Any = not negative
        elif negative:
            raise argparse.ArgumentError(self, f"{option_string} takes no value")
        else:
            try:
                value = self.spec.convert([values])
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentError(self, str(error)) from None
        setattr(namespace, self.dest, value)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, _BoolFlagAction):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (the full usage of a script lists ~100 flags) and a suggestion."""

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("unrecognized arguments:"):
            known = [flag for action in self._actions for flag in action.option_strings]
            unknown = [
                token
                for token in message.split(":", 1)[1].split()
                if token.startswith("--")
            ]
            close = (
                difflib.get_close_matches(unknown[0].split("=")[0], known, n=1)
                if unknown
                else []
            )
            if close:
                message += f" (did you mean {close[0]}?)"
        self.exit(
            2, f"{self.prog}: error: {message}; run with --help to list every flag\n"
        )


def config_sections(config_cls: type) -> dict[str, type]:
    """Section name -> section dataclass of a ``Config`` (each field has a default factory)."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls!r} is not a dataclass")
    instance = config_cls()
    return {
        f.name: type(getattr(instance, f.name)) for f in dataclasses.fields(config_cls)
    }


def flag_specs(config_cls: type) -> list[FlagSpec]:
    specs = []
    for section, section_cls in config_sections(config_cls).items():
        hints = _resolve_hints(section_cls)
        defaults = section_cls()
        described = docstring_args(section_cls.__doc__)
        for f in dataclasses.fields(section_cls):
            text = f.metadata.get("help") or described.get(f.name, "")
            specs.append(
                FlagSpec(
                    section, f.name, hints[f.name], getattr(defaults, f.name), text
                )
            )
    return specs


def _type_label(annotation: Any) -> str:
    text = (
        getattr(annotation, "__name__", None)
        if not typing.get_args(annotation)
        else None
    )
    spelled = str(annotation).replace("typing.", "").replace("collections.abc.", "")
    return text or spelled


RUN_FLAGS_EPILOG = """\
--steps N caps the optimizer steps of each training stage (MAE pre-training, fine-tuning);
  evaluation stages (k-fold, linear probe, kNN, embed) always run whole. The plan printed at
  the start of a capped stage says when its lr schedule is longer than the cap;
  --fit-schedule lays warm-up and cosine over the capped steps instead.
--<pretrain step>.epochs 0 skips pre-training: later steps use the randomly initialised
  encoder, the baseline that shows what pre-training adds.
"""


def build_arg_parser(pipeline: Any, config_cls: type) -> argparse.ArgumentParser:
    """argparse over every field of ``config_cls``; defaults are shown, never set (see ``parse_config``)."""
    parser = _ArgumentParser(
        prog=f"{pipeline.name}.py",
        usage="%(prog)s [--smoke] [--resume] [--out-dir DIR] [--data-dir DIR] [--<section>.<field> VALUE ...]",
        description=f"Train and evaluate '{pipeline.name}' (spec hash {pipeline.spec_hash[:12]}). "
        "Flags without a section control the run; --<section>.<field> sets any config field.",
        epilog=RUN_FLAGS_EPILOG,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,  # "--pretrain.epoch" must not silently mean "--pretrain.epochs"
    )
    groups: dict[str, Any] = {}
    for spec in flag_specs(config_cls):
        group = groups.get(spec.section)
        if group is None:
            group = groups[spec.section] = parser.add_argument_group(
                f"{spec.section} options"
            )
        group.add_argument(
            spec.flag,
            dest=spec.dest,
            action=_BoolFlagAction if spec.is_bool else _FlagAction,
            spec=spec,
            nargs="+" if spec.takes_sequence else None,
            default=argparse.SUPPRESS,
            metavar=spec.metavar,
            help=help_line(spec).replace("%", "%%"),  # argparse %-formats help
        )
    return parser


def help_line(spec: FlagSpec) -> str:
    """``Folder of ... (str, default: 'data')``: the description, then type and default."""
    inner, optional = spec.rule.without_none()
    if inner.kind == "literal":
        choices = ", ".join(map(str, inner.choices))
        kind = f"one of {choices}{' or none' if optional else ''};"
    else:
        kind = f"{_type_label(spec.annotation)},"
    facts = f"({kind} default: {spec.default!r})"
    return f"{spec.help} {facts}" if spec.help else facts


def _set_field(config: Any, spec: FlagSpec, value: Any) -> None:
    setattr(getattr(config, spec.section), spec.name, value)


def parse_config(pipeline: Any, config_cls: type, argv: Sequence[str] | None) -> Any:
    """Defaults, then the spec's smoke overrides (under ``--smoke``), then explicit flags."""
    parser = build_arg_parser(pipeline, config_cls)
    namespace = vars(parser.parse_args(list(argv) if argv is not None else None))
    specs = {spec.dest: spec for spec in flag_specs(config_cls)}
    config = config_cls()
    if namespace.get("run.smoke", False):
        for section, overrides in pipeline.smoke.items():
            if section == "data":
                continue  # kwargs of the synthetic smoke data set, not of the DataConfig
            for name, value in overrides.items():
                spec = specs.get(f"{section}.{name}")
                if spec is None:
                    raise UsageError(
                        f"the spec's smoke block sets unknown field {section}.{name}"
                    )
                _set_field(config, spec, spec.coerce(value))
    for dest, value in namespace.items():
        _set_field(config, specs[dest], value)
    run = config.run
    if run.smoke and run.steps is None:
        run.steps = DEFAULT_SMOKE_STEPS
    if run.steps is not None and run.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {run.steps}")
    if run.dtype not in ("auto", "bf16", "fp16", "fp32"):
        raise UsageError(f"--dtype must be auto, bf16, fp16 or fp32, got {run.dtype!r}")
    return config
