"""The build pipeline: spec -> index -> resolve -> inline -> render -> write (or check).

`build_spec` is what `sigmae-gen build` and bench/generator.py call. It renders every output
in memory first; only when all of them rendered does it touch the disk (generator/write.py):
it replaces the generated files of `<out>/<name>/`, all or none, and leaves everything else
in that folder alone. With `check=True` it writes nothing and reports drift of the
generated files only.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

# Every stage's module is imported here, once, not on a build's first call: a build needs
# them all, and an import inside build_spec would count in its in-process time.
import generator.formatting as formatting
from generator.cache import default_cache_dir
from generator.compiled import CompiledCache, CompiledParts, compile_key
from generator.errors import OutputError
from generator.index import build_index
from generator.inline import inline
from generator.ir import CheckSuite, CompiledSpec, InlinedProgram
from generator.notebook import notebook_document, notebook_text
from generator.readme import render_readme
from generator.render import ScriptParts, provenance_hash, render_script, script_parts, spec_reference
from generator.repository import colab_badge
from generator.resolve import resolve, spec_roots
from generator.sourcemap import render_source_map
from generator.spec import Spec, load_spec, skeleton_names
from generator.testsuite import (
    SuiteParts,
    check_reserved,
    check_roots,
    script_definitions,
    script_names_read_by_checks,
    suite_parts,
)
from generator.write import Drift, compare_outputs, write_outputs

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # holds components/ (the catalog) and templates/
STAND_IN_HASH = "0123456789abcdef" * 4  # what the format stage sees in place of a spec's sha256


@dataclass(frozen=True)
class BuildResult:
    """What a build produced (or, with check=True, how the disk differs from it)."""

    name: str
    out_dir: Path  # <out_root>/<name>
    files: dict[str, str]
    written: bool
    drift: Drift | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # for the CLI to print once (e.g. why the notebook has no Colab badge)

    @property
    def up_to_date(self) -> bool:
        return self.drift is None or self.drift.clean


def load_index(catalog_root: str | Path | None = None, *, cache_dir: str | Path | None = None):
    """The static catalog index of `catalog_root` (default: the project that holds this generator)."""

    root = Path(catalog_root) if catalog_root is not None else PROJECT_ROOT
    return build_index(root, "components", cache_dir=Path(cache_dir) if cache_dir is not None else None)


def compile_spec(
    spec_path: str | Path,
    *,
    overrides: Sequence[str] = (),
    index=None,
    catalog_root: str | Path | None = None,
    timings: dict[str, float] | None = None,
    use_cache: bool = True,
) -> CompiledSpec:
    """The compile stages, each once, in order: index, spec, resolve, inline.

    The resolve stage reaches the script's definitions, then (when the spec emits tests) the
    contract checks that apply to its components, with the script's definitions provided;
    the inline stage emits both programs, the checks' bound to the script's emitted names.
    Resolve and inline are skipped when an earlier build made the same result from the same
    catalog code (generator/compiled.py; ``use_cache=False``: always run them).
    """

    timings = timings if timings is not None else {}
    clock = time.perf_counter()
    if index is None:
        index = load_index(catalog_root)
    timings["index"] = time.perf_counter() - clock
    clock = time.perf_counter()
    spec = load_spec(spec_path, index, overrides)
    timings["spec"] = time.perf_counter() - clock
    clock = time.perf_counter()
    roots, reserved, wants_tests = spec_roots(spec), skeleton_names(spec), "tests" in spec.outputs
    store = CompiledCache(default_cache_dir(Path(index.root)) if use_cache else None)
    key = compile_key(index, roots, reserved, wants_tests)
    parts = reused = store.get(index, key)
    timings["compiled_cache"] = time.perf_counter() - clock
    timings["resolve"] = timings["inline"] = timings["tests_compile"] = 0.0
    if parts is None:  # generator/compiled.py: reused only while everything it read is unchanged
        clock = time.perf_counter()
        resolution = resolve(index, roots)
        timings["resolve"] = time.perf_counter() - clock
        clock = time.perf_counter()
        program = inline(index, resolution, reserved=reserved)
        timings["inline"] = time.perf_counter() - clock
        tests = None
        if wants_tests:
            clock = time.perf_counter()
            tests = compile_checks(index, program)
            timings["tests_compile"] = time.perf_counter() - clock
        parts = CompiledParts(resolution, program, tests)
        clock = time.perf_counter()
        store.put(index, key, parts)
        timings["compiled_cache"] += time.perf_counter() - clock
    resolution, program, tests = parts.resolution, parts.program, parts.tests
    sources = tuple(sorted(program.source_files))
    # The index hashed every file's bytes when it read them: the hash covers exactly that code.
    source_hashes = {info.path.as_posix(): info.sha256 for info in index.modules.values()}
    spec_hash = provenance_hash(spec, {path: source_hashes[path] for path in sources})
    return CompiledSpec(spec, index, resolution, program, spec_hash, sources, tests, reused=reused is not None)


def compile_checks(index, program: InlinedProgram) -> CheckSuite:
    """Resolve and inline the contract checks of the script's components (the test module's code)."""

    planned, roots = check_roots(index, program)
    provided = script_definitions(index, program)
    names = dict(provided)
    checks = None
    if roots:
        # Resolved with the script's definitions provided: what only they need is not reached.
        resolution = resolve(index, roots, provided=sorted(provided))
        checks = inline(index, resolution, reserved=check_reserved(planned), provided=provided)
        names.update(checks.names)
    return CheckSuite(planned, checks, names, provided, script_names_read_by_checks(index, checks, names))


def output_names(name: str) -> tuple[str, ...]:
    """Every file name a build of spec `name` may write (which of them depends on its `outputs`).

    A rebuild replaces these and nothing else in the build folder; one of them that this
    build no longer writes is removed if its header says the generator wrote it.
    """
    return (f"{name}.py", f"{name}.ipynb", f"test_{name}.py", "README.md", f"{name}.map.json")


def config_body_names(source: str) -> set[str]:
    """Names the emitted `Config` class body evaluates (its defaults: `field`, the section
    classes, the runtime's options); annotations are strings there and do not count."""
    names: set[str] = set()
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.ClassDef) and statement.name == "Config":
            for item in statement.body:
                value = item.value if isinstance(item, (ast.AnnAssign, ast.Assign)) else None
                if value is not None:
                    names.update(node.id for node in ast.walk(value) if isinstance(node, ast.Name))
    return names


def check_step_names(spec: Spec, script: str) -> None:
    """A step name becomes a field of the emitted `Config` class. One that is also a name the
    class body evaluates (`field`, a section's config class, the runtime's `RunOptions`)
    would shadow it there and break the script at import: refuse it at the step's line.
    (A step named like a module-level function, e.g. `evaluate`, shadows nothing used.)"""
    taken = config_body_names(script)
    for choice in spec.steps:
        if choice.section in taken:
            raise choice.loc.error(
                f"step name {choice.section!r} is a name the emitted script's Config class uses, so the script "
                f"would break at import; set another `name:` on this step (e.g. `name: {choice.section}_step`)"
            )


def render_outputs(compiled: CompiledSpec, *, colab_url: str | None = None, timings: dict[str, float] | None = None) -> dict[str, str]:
    """Every output file of a build, by file name, in memory (`colab_url`: the notebook's badge, None for none).

    The last three stages, each once: render (the generated code from the templates), format
    (black on that generated code only, one call), then lay out the files around the
    catalog text, which is black-clean already.
    """

    timings = timings if timings is not None else {}
    spec = compiled.spec
    clock = time.perf_counter()
    parts = script_parts(spec, compiled.program, spec_hash=compiled.spec_hash)
    tests = suite_parts(compiled) if compiled.tests is not None else None
    timings["render"] = time.perf_counter() - clock
    clock = time.perf_counter()
    parts, tests = format_generated(parts, tests, cache_dir=default_cache_dir(Path(compiled.index.root)), spec_hash=compiled.spec_hash)
    check_step_names(spec, parts.skeleton)
    timings["format"] = time.perf_counter() - clock
    clock = time.perf_counter()
    spec_ref = spec_reference(spec, Path(compiled.index.root))
    files = {f"{spec.name}.py": render_script(spec, compiled.program, spec_hash=compiled.spec_hash, sources=compiled.sources, parts=parts, spec_ref=spec_ref)}
    notebook = None
    if "notebook" in spec.outputs:
        notebook = notebook_document(spec, parts, spec_hash=compiled.spec_hash, colab_url=colab_url)
        files[f"{spec.name}.ipynb"] = notebook_text(notebook)
    if tests is not None:
        files[f"test_{spec.name}.py"] = tests.text()
    files[f"{spec.name}.map.json"] = source_map(compiled, files, spec_ref, notebook)
    files["README.md"] = render_readme(compiled, files, colab_url=colab_url)
    timings["layout"] = time.perf_counter() - clock
    return files


def format_generated(
    parts: ScriptParts, tests: SuiteParts | None, *, cache_dir: Path | None, spec_hash: str = ""
) -> tuple[ScriptParts, SuiteParts | None]:
    """The format stage: black on the code the generator writes (script and test skeletons), in one call.

    ``spec_hash`` (which `main()` passes to the runtime) changes with every catalog edit, and
    black's layout of a line depends on the length of a string in it, not on its letters: the
    pieces go to black (and its cache) with a same-length stand-in for it, so editing the
    catalog does not send the unchanged skeleton to black (~0.2 s to import) again."""

    stand_in = STAND_IN_HASH[: len(spec_hash)]
    swap = bool(spec_hash) and len(spec_hash) <= len(STAND_IN_HASH) and spec_hash != stand_in

    def hide(source: str) -> str:
        return source.replace(spec_hash, stand_in) if swap else source

    def show(source: str) -> str:
        return source.replace(stand_in, spec_hash) if swap else source

    sources = [parts.skeleton, parts.entry]
    what = ["the generated Config", "the generated build_pipeline() and main()"]
    if tests is not None:  # its header, and only the bindings a long name keeps from being black-clean
        test_sources, test_what = tests.format_sources()
        sources += test_sources
        what += test_what
    if swap and any(stand_in in source for source in sources):  # cannot tell them apart afterwards
        swap = False
    formatted = [show(text) for text in formatting.format_many([hide(source) for source in sources], cache_dir=cache_dir, what=what)]
    parts = parts.with_formatted(formatted[0], formatted[1])
    return parts, tests.with_formatted(formatted[2:]) if tests is not None else None


def source_map(compiled: CompiledSpec, files: dict[str, str], spec_ref: str, notebook: dict[str, Any] | None = None) -> str:
    """`<name>.map.json` of the rendered script and notebook (``notebook``: its document,
    whose cells the map locates definitions in; its text is ``files[<name>.ipynb]``)."""

    name = compiled.spec.name
    notebook_name = f"{name}.ipynb" if notebook is not None else None
    return render_source_map(
        compiled.spec,
        compiled.program,
        script_name=f"{name}.py",
        script=files[f"{name}.py"],
        notebook_name=notebook_name,
        notebook=files[notebook_name] if notebook_name else None,
        notebook_cells=[cell["source"] for cell in notebook["cells"]] if notebook is not None else None,
        spec_ref=spec_ref,
        spec_hash=compiled.spec_hash,
        catalog_hashes={info.path.as_posix(): info.sha256 for info in compiled.index.modules.values()},
    )


def refuse_output_inside_catalog(out_dir: str | Path, catalog: Path) -> None:
    """An output folder inside the catalog package would make its scripts look like catalog modules."""
    target, package = Path(out_dir).resolve(), catalog.resolve()
    if target == package or package in target.parents:
        raise OutputError(
            f"-o {out_dir} lies inside the catalog ({catalog}): the generated script would be read as a catalog "
            "module by every later build; choose a folder outside it (the default is build/)"
        )


def build_spec(
    spec_path: str | Path,
    out_dir: str | Path = "build",
    *,
    overrides: Sequence[str] = (),
    check: bool = False,
    index=None,
    catalog_root: str | Path | None = None,
    repo_url: str | None = None,
    use_cache: bool = True,
) -> BuildResult:
    """Build one spec into `out_dir/<name>/` (atomically), or with `check` compare without writing.

    The notebook's Colab badge links its GitHub address (generator/repository.py: `repo_url`,
    else the output's repository's `[tool.sigmae-gen] repo-url`, else its GitHub remote); without
    one there is no badge and `warnings` says why.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    catalog = index.root / index.package if index is not None else Path(catalog_root or PROJECT_ROOT) / "components"
    refuse_output_inside_catalog(out_dir, catalog)
    compiled = compile_spec(spec_path, overrides=overrides, index=index, catalog_root=catalog_root, timings=timings, use_cache=use_cache)
    # the build's own folder too: `--set name=components -o .` must not write into the catalog
    refuse_output_inside_catalog(Path(out_dir) / compiled.spec.name, catalog)
    badge = colab_badge(out_dir, compiled.spec.name, repo_url) if "notebook" in compiled.spec.outputs else None
    warnings = (badge.warning,) if badge is not None and badge.warning else ()
    files = render_outputs(compiled, colab_url=badge.url if badge is not None else None, timings=timings)
    dest = Path(out_dir) / compiled.spec.name
    stale = output_names(compiled.spec.name)
    if check:
        drift = compare_outputs(dest, files, stale=stale)
        timings["total"] = time.perf_counter() - start
        return BuildResult(compiled.spec.name, dest, files, written=False, drift=drift, timings=timings, warnings=warnings)
    clock = time.perf_counter()
    write_outputs(out_dir, compiled.spec.name, files, stale=stale)
    timings["write"] = time.perf_counter() - clock
    timings["total"] = time.perf_counter() - start
    return BuildResult(compiled.spec.name, dest, files, written=True, timings=timings, warnings=warnings)
