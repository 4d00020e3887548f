"""Render the emitted script: provenance header, inlined catalog code, Config, PIPELINE, main().

The skeleton's shape lives in `templates/script.py.j2` and `templates/config.py.j2`; this
module only turns validated spec values into Python source. Every spec value becomes code
through `literal_source` (built from `repr` of plain values, with explicit spellings for
inf/nan), never by pasting spec text, so a spec cannot inject code. Names that reach code are
identifiers checked by the spec loader or emitted names chosen by the inliner.

Nothing is formatted here: the generated code (Config, main) goes to build.py's one format
stage, and the inlined chunks are catalog text, which is black-clean already.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import math
import textwrap
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jinja2

import generator
from generator.errors import SigmaeError
from generator.formatting import merge_imports
from generator.ir import DefinitionKey, InlinedProgram, Param
from generator.sections import EDITS as SECTION_EDITS
from generator.sections import SECTIONS, SUPPORT, SUPPORT_BANNER
from generator.sections import TITLES as SECTION_TITLES
from generator.resolve import RUNTIME_MODULE, RUNTIME_NAMES
from generator.spec import Choice, Spec, section_class_name

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
TYPING_NAMES = frozenset({"Any", "Literal", "Optional", "Union", "Sequence", "Mapping", "Tuple", "List", "Dict"})


class RenderError(Exception):
    """A broken contract between generator stages (a bug in the tool, not a user error)."""


# --------------------------------------------------------------------------- literals


def literal_source(value: Any) -> str:
    """Python source that evaluates to exactly `value` (plain YAML-shaped values only).

    Floats round-trip through `repr`; infinities and NaN, which have no literal, are spelled
    `float("inf")`, `-float("inf")`, `float("nan")`. Strings go through `repr`, which always
    yields a valid literal of the same string, whatever quotes or newlines it holds.
    """
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '-float("inf")'
        return repr(float(value))
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, tuple):
        items = [literal_source(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, list):
        return f"[{', '.join(literal_source(item) for item in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal_source(k)}: {literal_source(v)}" for k, v in value.items()) + "}"
    raise RenderError(f"cannot emit a {type(value).__name__} as a literal: {value!r}")


def docstring_source(text: str) -> str:
    """A string literal for a docstring: triple-quoted when that keeps `text` exact, else `repr`."""
    lines = text.split("\n")
    safe = (
        '"""' not in text
        and "\\" not in text
        and not text.endswith('"')
        and all(line.isprintable() for line in lines)
    )
    if safe:
        return '"""' + text + ("\n" if "\n" in text else "") + '"""'
    return repr(text)


def is_mutable(value: Any) -> bool:
    return isinstance(value, (list, dict))


# --------------------------------------------------------------------------- imports


def bound_names(import_lines: Iterable[str]) -> set[str]:
    """Names that a list of import statements binds."""
    names: set[str] = set()
    for line in import_lines:
        for stmt in ast.parse(line).body if line.strip() else []:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for alias in stmt.names:
                    names.add(alias.asname or alias.name.split(".")[0])
    return names


# --------------------------------------------------------------------------- skeleton records


@dataclass(frozen=True)
class FieldSpec:
    name: str
    annotation: str
    default: str  # source of the default (`field(default_factory=...)` for mutable values)


@dataclass(frozen=True)
class SectionSpec:
    section: str
    class_name: str
    doc: str  # docstring literal naming the component
    fields: tuple[FieldSpec, ...]


@lru_cache(maxsize=4096)  # a build asks about the same few annotations hundreds of times
def normalise_annotation(annotation: str | None) -> str:
    """Single-line canonical text of a signature annotation (`Any` when there is none)."""
    if annotation is None:
        return "Any"
    try:
        return ast.unparse(ast.parse(annotation.strip(), mode="eval").body)
    except SyntaxError:
        raise RenderError(f"unparsable annotation {annotation!r}") from None


@lru_cache(maxsize=4096)
def annotation_names(annotation: str) -> frozenset[str]:
    tree = ast.parse(annotation, mode="eval")
    return frozenset(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))


def field_annotation(choice: Choice, param: Param, program: InlinedProgram | None = None) -> str:
    """A schema parameter's annotation as the script spells it.

    Usually the signature's text; a catalog name in it (a `Literal` alias, say) is respelled
    with its emitted name when the inliner had to rename it.
    """
    text = normalise_annotation(param.annotation)
    if program is None:
        return text
    tree = ast.parse(text, mode="eval")
    changed = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            emitted = program.names.get((choice.component.module, node.id))
            if emitted is None:
                spellings = program.emitted_spellings.get(node.id, ())
                emitted = next(iter(spellings)) if len(spellings) == 1 else None
            if emitted is not None and emitted != node.id:
                node.id, changed = emitted, True
    return ast.unparse(tree) if changed else text


def shadows_field(choice: Choice) -> bool:
    """A schema parameter named ``field`` would shadow ``dataclasses.field`` inside its section's
    class body; that section spells the factory ``dataclasses.field``."""
    return any(param.name == "field" for param in choice.params)


# Data-set parameters the runtime sets from a run flag (`--download`): no `--data.<name>` twin.
RUN_FLAG_PARAMS = frozenset({"download"})


def config_params(choice: Choice) -> tuple[Param, ...]:
    """The parameters of `choice` that become fields (and `--<section>.<field>` flags) of its section."""
    if choice.section != "data":
        return choice.params
    for param in choice.params:
        if param.name in RUN_FLAG_PARAMS and param.name in choice.from_spec:
            raise SigmaeError(
                f"data.with.{param.name}: the script's --{param.name} flag sets it at run time; remove it from the spec",
                choice.loc.file,
                choice.loc.line,
                choice.loc.column,
            )
    return tuple(param for param in choice.params if param.name not in RUN_FLAG_PARAMS)


def section_docstring(summary: str, params: Sequence[Param]) -> str:
    """A section class's docstring: `summary`, then an `Args:` entry per described field
    (components/flags.py reads these for `--help`)."""
    entries = [
        textwrap.fill(
            f"{p.name}: {p.description}", 88, initial_indent=" " * 8, subsequent_indent=" " * 12,
            break_long_words=False, break_on_hyphens=False,
        )
        for p in params
        if p.description
    ]
    return summary + ("\n\n    Args:\n" + "\n".join(entries) if entries else "")


def section_spec(choice: Choice, program: InlinedProgram | None = None) -> SectionSpec:
    fields = []
    factory = "dataclasses.field" if shadows_field(choice) else "field"
    for param in config_params(choice):
        value = choice.values[param.name]
        default = literal_source(value)
        if is_mutable(value):
            default = f"{factory}(default_factory=lambda: {default})"
        fields.append(FieldSpec(param.name, field_annotation(choice, param, program), default))
    component = choice.component
    doc = f"`{choice.section}` section: {component.kind} {component.name!r} v{component.version}; each field is a `--{choice.section}.<field>` flag."
    doc = section_docstring(doc, config_params(choice))
    return SectionSpec(choice.section, section_class_name(choice.section), docstring_source(doc), tuple(fields))



def spec_reference(spec: Spec, root: Path | None) -> str:
    """How to name the spec in rebuild hints: relative to the project root when inside it.

    Stable across machines and working directories (never an absolute path), so it can go
    into emitted files without breaking byte-identical rebuilds.
    """
    if root is not None:
        try:
            return spec.path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return spec.files[0].display if spec.files else spec.path.name


def emitted_name(program: InlinedProgram, key: DefinitionKey) -> str:
    try:
        return program.names[key]
    except KeyError:
        raise RenderError(f"{key[0]}.{key[1]} is not in the inlined program; was it a resolver root?") from None


# --------------------------------------------------------------------------- hashing


def provenance_hash(spec: Spec, sources: Mapping[str, str]) -> str:
    """sha256 over the spec files, the `--set` overrides and every used catalog source.

    `sources` maps each catalog file used to the sha256 of its bytes (the index has them).
    """
    digest = hashlib.sha256()
    digest.update(f"sigmae-gen {generator.__version__}\n".encode())
    for spec_file in spec.files:
        digest.update(f"spec {spec_file.display!r} {spec_file.sha256}\n".encode())
    for override in spec.overrides:
        digest.update(f"set {override!r}\n".encode())
    for path in sorted(sources):
        digest.update(f"source {path!r} {sources[path]}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- templates


class _CompiledTemplates(jinja2.BytecodeCache):
    """Compiled templates on disk, so a fresh process does not compile all of them again (~40 ms).

    jinja2 keys a bucket by template name and source checksum, and its bytecode header by
    Python version: a stale entry is never used. A cache that cannot be read or written is a miss.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, bucket: jinja2.bccache.Bucket) -> Path:
        return self.directory / f"{bucket.key}.cache"

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            data = self._path(bucket).read_bytes()
        except OSError:
            return
        try:
            bucket.bytecode_from_string(data)
        except Exception:  # truncated or corrupt: compile again
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        from generator.cache import atomic_write_bytes

        try:
            atomic_write_bytes(self._path(bucket), bucket.bytecode_to_string())
        except OSError:
            pass


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates' jinja2 environment (no autoescape: we render code; values arrive as source)."""
    from generator.cache import default_cache_dir

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        bytecode_cache=_CompiledTemplates(default_cache_dir(TEMPLATES_DIR.parent) / "jinja"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def docstring_summary(text: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    if not text:
        return ""
    paragraph = text.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def comment_lines(text: str, width: int = 86) -> list[str]:
    """A docstring's first paragraph as `# ` comment lines (each line is only ever a comment)."""
    words = docstring_summary(text).split()
    lines, current = [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(current)
    return [f"# {line}" for line in lines]


@dataclass(frozen=True)
class ChunkView:
    path: str
    module: str
    comments: tuple[str, ...]
    code: str
    docstring: str = ""
    section: str = "support"  # reader-order section (generator/sections.py)
    generated: bool = False  # skeleton code from the spec (Config, main), not catalog code

    @property
    def opens_with_definition(self) -> bool:
        """Whether the first statement is a def, class or decorator (black: two blank lines after imports, else one)."""
        first = next((line for line in self.code.splitlines() if line.strip() and not line.startswith("#")), "")
        return first.startswith(("def ", "async def ", "class ", "@"))


def chunk_views(program: InlinedProgram) -> list[ChunkView]:
    """The program's module chunks as the templates lay them out (the `# %%` marker is theirs)."""
    return [
        ChunkView(chunk.path, chunk.module, tuple(comment_lines(chunk.docstring or "")), chunk.code.strip("\n"), chunk.docstring or "", chunk.section)
        for chunk in program.chunks
    ]


@dataclass(frozen=True)
class SectionView:
    """One reader-order section of the script: its banner, then its chunks."""

    name: str  # a `sections.SECTIONS` name, or "main"
    title: str
    edits: str  # one sentence: what a user edits here
    chunks: tuple[ChunkView, ...]

    @property
    def banner(self) -> list[str]:
        rule = "# " + "=" * 86
        heading = SUPPORT_BANNER if self.name == SUPPORT else f"# {self.title.upper()}"
        return [rule, *comment_lines(f"{heading.removeprefix('# ')}. {self.edits}"), rule]

    @property
    def opens_with_definition(self) -> bool:
        return bool(self.chunks) and self.chunks[0].opens_with_definition


def render_skeleton(spec: Spec, program: InlinedProgram, *, spec_hash: str) -> str:
    """The section dataclasses and Config (without imports), as the template writes them."""
    names = {name: emitted_name(program, (RUNTIME_MODULE, name)) for name in RUNTIME_NAMES}
    steps = [(choice.section, emitted_name(program, choice.component.key)) for choice in spec.steps]
    smoke_data = emitted_name(program, spec.smoke_data.component.key) if spec.smoke_data else "None"
    source = environment().get_template("config.py.j2").render(
        spec=spec,
        spec_file=spec.files[0].display if spec.files else spec.path.name,
        sections=[section_spec(choice, program) for choice in spec.sections],
        rt=names,
        name_literal=literal_source(spec.name),
        hash_literal=literal_source(spec_hash),
        data=emitted_name(program, spec.data.component.key),
        transform=emitted_name(program, spec.transform.component.key),
        model=emitted_name(program, spec.model.component.key),
        steps=[(literal_source(section), function) for section, function in steps],
        smoke_data=smoke_data,
        smoke=literal_source(spec.smoke),
    )
    return source


def render_entry(spec: Spec, program: InlinedProgram, *, spec_hash: str) -> str:
    """`build_pipeline()` and `main()`, as the template writes them: they stand after the recipes,
    and build the runtime's records only when called, so the support section can come after them."""
    names = {name: emitted_name(program, (RUNTIME_MODULE, name)) for name in RUNTIME_NAMES}
    steps = [(literal_source(choice.section), emitted_name(program, choice.component.key)) for choice in spec.steps]
    source = environment().get_template("main.py.j2").render(
        rt=names,
        name_literal=literal_source(spec.name),
        hash_literal=literal_source(spec_hash),
        data=emitted_name(program, spec.data.component.key),
        transform=emitted_name(program, spec.transform.component.key),
        model=emitted_name(program, spec.model.component.key),
        steps=steps,
        smoke_data=emitted_name(program, spec.smoke_data.component.key) if spec.smoke_data else "None",
        smoke=literal_source(spec.smoke),
    )
    return source


def skeleton_imports(spec: Spec, program: InlinedProgram) -> list[str]:
    """Imports the skeleton itself needs: dataclass/field and typing names in annotations."""
    lines = ["from dataclasses import dataclass, field"]
    if any(shadows_field(choice) for choice in spec.sections):
        lines.insert(0, "import dataclasses")
    defined = set(program.names.values()) | bound_names(program.imports)
    needed: dict[str, tuple[Choice, Param]] = {}  # name -> the first parameter that names it
    for choice in spec.sections:
        for param in choice.params:
            for name in annotation_names(field_annotation(choice, param, program)):
                needed.setdefault(name, (choice, param))
    for name in sorted(needed.keys() - defined - set(dir(builtins))):
        if name in TYPING_NAMES:
            lines.append(f"from typing import {name}")
        else:
            choice, param = needed[name]
            component = choice.component
            raise SigmaeError(
                f"annotation of {component.qualname}({param.name}: {param.annotation}) names {name!r}, which the script "
                "cannot define; use the schema types of components/README.md §1 (int, float, bool, str, tuple, list, Literal, Optional)",
                str(component.path),
                param.lineno,
                1,
            )
    return lines


@dataclass(frozen=True)
class ScriptParts:
    """The pieces of an emitted script; the notebook emitter lays out the same pieces as cells."""

    docstring: str  # string literal source
    imports: tuple[str, ...]
    chunks: tuple[ChunkView, ...]
    skeleton: str  # the section dataclasses and Config
    run_pipeline: str = "run_pipeline"  # emitted name of the runtime's entry point
    entry: str = ""  # build_pipeline() and main() (no `__main__` guard)
    formatted: bool = False  # whether the format stage has run on `skeleton` and `entry`

    def with_formatted(self, skeleton: str, entry: str) -> ScriptParts:
        """These parts with the format stage's black output for the generated code."""
        return replace(self, skeleton=skeleton.strip("\n"), entry=entry.strip("\n"), formatted=True)

    def sections(self) -> list[SectionView]:
        """Reader order: configuration (records, then Config), model, objective, data, recipes,
        main(), support; a section with nothing in it is left out."""
        generated = {
            "config": ChunkView("Config (generated from the spec)", "", (), self.skeleton, section="config", generated=True),
            "main": ChunkView("build_pipeline() and main() (generated from the spec)", "", (), self.entry, section="main", generated=True),
        }
        names = [*SECTIONS[:-1], "main", SUPPORT]
        views = []
        for name in names:
            chunks = [chunk for chunk in self.chunks if chunk.section == name]
            if name in generated and generated[name].code:
                chunks.append(generated[name])
            if chunks:
                views.append(SectionView(name, SECTION_TITLES[name], SECTION_EDITS[name], tuple(chunks)))
        return views


def script_parts(spec: Spec, program: InlinedProgram, *, spec_hash: str) -> ScriptParts:
    """The script's pieces; its generated code (skeleton, entry) is not formatted yet (build.py's format stage)."""
    imports = merge_imports([*program.imports, *skeleton_imports(spec, program)])
    description = spec.description.strip() or f"Masked-autoencoder training for {spec.name}."
    docstring = f"{description}\n\nRun `python {spec.name}.py --help` for every flag; `--smoke` for a tiny CPU run."
    return ScriptParts(
        docstring=docstring_source(docstring),
        imports=tuple(imports),
        chunks=tuple(chunk_views(program)),
        skeleton=render_skeleton(spec, program, spec_hash=spec_hash).strip("\n"),
        run_pipeline=emitted_name(program, (RUNTIME_MODULE, "run_pipeline")),
        entry=render_entry(spec, program, spec_hash=spec_hash).strip("\n"),
    )


def render_script(
    spec: Spec,
    program: InlinedProgram,
    *,
    spec_hash: str,
    sources: Sequence[str] = (),
    parts: ScriptParts | None = None,
    spec_ref: str | None = None,
) -> str:
    """The whole emitted script as text (deterministic: same inputs, same bytes)."""
    parts = parts or script_parts(spec, program, spec_hash=spec_hash)
    text = environment().get_template("script.py.j2").render(
        spec=spec,
        version=generator.__version__,
        spec_hash=spec_hash,
        spec_files=[repr(f.display) for f in spec.files],
        spec_ref=repr(spec_ref or spec_reference(spec, None)),
        overrides=[repr(o) for o in spec.overrides],
        sources=[repr(s) for s in sorted(set(sources))],  # a module may give two chunks
        docstring=parts.docstring,
        imports=parts.imports,
        sections=parts.sections(),
    )
    return text.rstrip("\n") + "\n"
