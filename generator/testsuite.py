"""Emit `test_<name>.py`: the catalog's contract checks, inlined and bound to the script's classes.

For every registered component the script holds (model, transform, data sets, losses, ...),
each `check_*` function of `components/contracts/<kind>.py` that applies to it becomes one
test, fed by the component's registered contract fixture (`"<kind>/<name>"`). A check applies
to every component of its kind unless it is decorated `@applies_to("name", ...)` with string
literals (read here from its source, never imported); the toolkit's tests
(tests/contract_harness.py) follow the same rule. A contracts module that defines
`<kind>_factory(component, fixture_kwargs)` (losses: `loss_factory`) builds the checks'
factories itself; otherwise the component is called with the fixture's kwargs plus the
check's overrides (`make_factory`). The checks and fixtures are inlined by the same resolver
and inliner as the script; every definition the script already holds is imported from it
instead of being emitted twice. Two end-to-end tests close the
suite: a smoke training run and a checkpoint round trip (`--resume` never trains a finished
step again: each checkpoint is left as it was, or continued past its step).

The module needs only the script beside it, torch, pytest and hypothesis.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from generator.errors import SigmaeError
from generator.formatting import LINE_LENGTH
from generator.index import CatalogIndex
from generator.ir import CompiledSpec, Component, DefinitionKey, InlinedProgram, PlannedCheck
from generator.render import ChunkView, chunk_views, docstring_source, environment, merge_imports

CONTRACTS_PACKAGE = "components.contracts"
# Names the test module's own skeleton defines; inlined contract code must not take them.
TEST_SKELETON_NAMES = (
    "SCRIPT", "HERE", "make_factory", "checkpoint_files", "read_checkpoint", "same_weights", "test_smoke_train_steps", "test_checkpoint_round_trip"
)


@dataclass(frozen=True)
class Binding:
    """One check applied to one component, with the fixture that builds its small instance."""

    test_name: str
    check: str  # emitted name of the check function
    component: str  # emitted name of the component in the script
    fixture: str  # emitted name of the fixture function
    label: str  # "model 'tiny'"
    factory: str = "make_factory"  # emitted name of `factory(component, fixture kwargs)`


def contracts_module(index, kind: str) -> str | None:
    """`components.contracts.<kind>` (or the plural spelling) when the catalog has it."""
    for candidate in (f"{CONTRACTS_PACKAGE}.{kind}", f"{CONTRACTS_PACKAGE}.{kind}s", f"{CONTRACTS_PACKAGE}.{kind}es"):
        if candidate in index.modules:
            return candidate
    return None


def check_functions(index, module: str) -> list[DefinitionKey]:
    """`check_*` functions of a contracts module, in source order."""
    found = [d for d in index.definitions_in(module) if d.kind == "function" and d.name.startswith("check_")]
    return [(d.module, d.name) for d in sorted(found, key=lambda d: d.lineno)]


APPLIES_TO = "applies_to"  # the decorator limiting a check to named components


def check_targets(index, check: DefinitionKey) -> frozenset[str] | None:
    """The names of `@applies_to("a", "b")` on a check, or None when it applies to all.

    Read from the check's source text: the decorator's arguments must be string literals.
    """
    statement = index.statements[check]
    node = _decorated(statement)
    path = str(index.modules[check[0]].path.as_posix())
    targets: set[str] | None = None
    for deco in getattr(node, "decorator_list", []):
        func = deco.func if isinstance(deco, ast.Call) else deco
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name != APPLIES_TO:
            continue
        line = statement.first_line + deco.lineno - 1
        args = deco.args if isinstance(deco, ast.Call) else []
        literal = all(isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value for a in args)
        if not isinstance(deco, ast.Call) or not args or deco.keywords or not literal:
            raise SigmaeError(
                f'{check[1]}: write @{APPLIES_TO}("name", ...) with one or more component names as string '
                "literals (the generator reads them statically)",
                path,
                line,
                deco.col_offset + 1,
            )
        targets = (targets or set()) | {a.value for a in args}
    return None if targets is None else frozenset(targets)


def _decorated(statement) -> ast.stmt:
    """The check's `def` with its decorators, parsed from the lines above its `def` line only
    (the body, most of a check's text, holds nothing the decorators need); the whole text
    where that does not parse as a decorated function."""
    head = statement.code.split("\n")[: statement.lineno - statement.first_line]
    try:
        node = ast.parse("\n".join([*head, "def _():", "    pass", ""])).body[0]
        if isinstance(node, ast.FunctionDef) and node.name == "_" and len(node.body) == 1:
            return node
    except SyntaxError:
        pass
    return ast.parse(statement.code).body[0]


def applicable_checks(index, kind: str, module: str) -> list[tuple[DefinitionKey, frozenset[str] | None]]:
    """Every check of `module` with its targets; a target that names no `kind` component is an error."""
    found = []
    for check in check_functions(index, module):
        targets = check_targets(index, check)
        for target in sorted(targets or ()):
            if (kind, target) not in index.components:
                known = ", ".join(c.name for c in index.components_of(kind)) or "(none)"
                raise SigmaeError(
                    f"{check[1]}: @{APPLIES_TO}({target!r}) names no registered {kind} component; known: {known}",
                    str(index.modules[module].path.as_posix()),
                    index.statements[check].lineno,
                    1,
                )
        found.append((check, targets))
    return found


def factory_builder(index, kind: str, module: str) -> DefinitionKey | None:
    """`<kind>_factory` of the contracts module, when it defines one (see the module docstring)."""
    key = (module, f"{kind}_factory")
    definition = index.definitions.get(key)
    return key if definition is not None and definition.kind == "function" else None


def bound_components(index, program: InlinedProgram) -> list[Component]:
    """Registered components (not fixtures) whose definitions the script contains, stable order."""
    found = [c for c in index.components.values() if c.kind != "fixture" and c.key in program.names]
    return sorted(found, key=lambda c: (c.kind, c.name))


def _test_name(kind: str, component: str, check: str) -> str:
    spelled = component.lower().replace("++", "_pp").replace("+", "_p")
    slug = "_".join(part for part in "".join(ch if ch.isalnum() else "_" for ch in spelled).split("_") if part) or "component"
    return f"test_{kind}_{slug}_{check.removeprefix('check_')}"


Planned = PlannedCheck  # one check bound to one component, by definition keys


def plan(index, program: InlinedProgram) -> tuple[list[Planned], list[DefinitionKey]]:
    """The checks that apply to the script's components, and the resolver roots they need."""
    planned: list[Planned] = []
    roots: list[DefinitionKey] = []
    checks_of: dict[str, list[tuple[DefinitionKey, frozenset[str] | None]]] = {}  # per contracts module: read once
    for component in bound_components(index, program):
        module = contracts_module(index, component.kind)
        if module is None:
            continue
        if module not in checks_of:
            checks_of[module] = applicable_checks(index, component.kind, module)
        checks = [c for c, targets in checks_of[module] if targets is None or component.name in targets]
        if not checks:
            continue
        fixture = index.components.get(("fixture", f"{component.kind}/{component.name}"))
        if fixture is None:
            raise SigmaeError(
                f"{component.kind} {component.name!r} has no contract fixture; register one with "
                f"@fixture_registry.register({component.kind + '/' + component.name!r}) in {module.replace('.', '/')}.py",
                str(component.path),
                component.lineno,
                1,
            )
        factory = factory_builder(index, component.kind, module)
        for check in checks:
            planned.append(Planned(component, check, fixture.key, factory))
            for key in (check, fixture.key, factory):
                if key is not None and key not in roots:
                    roots.append(key)
    return planned, roots


def script_names_read_by_checks(index: CatalogIndex, checks: InlinedProgram | None, names: dict[DefinitionKey, str]) -> frozenset[str]:
    """Emitted names (``names``: the suite's) of the definitions the inlined ``checks`` read, from
    the index's scope analysis: no parse of the emitted code. The compile stage records them
    (CheckSuite.script_reads), so rendering the test module needs no catalog facts."""
    from generator.resolve import dependencies

    if checks is None:
        return frozenset()
    found: set[str] = set()
    for chunk in checks.chunks:
        for definition in chunk.definitions:
            statement = index.statements[(definition.module, definition.names[0])]
            for dep in dependencies(index, statement):
                if dep.target_key is not None and dep.target_key in names:
                    found.add(names[dep.target_key])
    return frozenset(found)


@lru_cache(maxsize=None)
def _template_names() -> frozenset[str]:
    """Names the bindings template reads outside its per-binding lines (parsed once per process)."""
    text = _skeleton_text(())
    return frozenset(node.id for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Name))


def _used_names(bindings: list[Binding]) -> set[str]:
    """The names the rendered bindings read: the template's own, and each binding's call
    (``check(factory(component, fixture(tmp_path)))``), without parsing the rendered text."""
    return set(_template_names()).union(*((b.check, b.factory, b.component, b.fixture) for b in bindings))


def script_definitions(index: CatalogIndex, program: InlinedProgram) -> dict[DefinitionKey, str]:
    """Definitions the script holds (not its imports: the test module imports those itself)."""
    return {key: name for key, name in program.names.items() if getattr(index.definitions.get(key), "kind", "import") != "import"}


def check_roots(index: CatalogIndex, program: InlinedProgram) -> tuple[tuple[PlannedCheck, ...], tuple[DefinitionKey, ...]]:
    """The resolve stage's share of the test module: the checks that apply, and their roots."""
    planned, roots = plan(index, program)
    return tuple(planned), tuple(roots)


def check_reserved(planned: tuple[PlannedCheck, ...]) -> tuple[str, ...]:
    """Names the test module's skeleton defines: its inlined checks must not take them."""
    return (*TEST_SKELETON_NAMES, *(_test_name(p.component.kind, p.component.name, p.check[1]) for p in planned))


@dataclass(frozen=True)
class SuiteParts:
    """The emitted test module's pieces: generated header and bindings (formatted by the format
    stage), and the inlined checks between them (catalog text)."""

    header: str
    chunks: tuple[ChunkView, ...]
    blocks: tuple[str, ...]  # one test function per binding, in order
    clean: tuple[bool, ...]  # whether each block is certainly black's layout already (`binding_block`)

    @property
    def skeleton(self) -> str:
        """The bindings section: the template's own tests (black-clean: tests/test_testsuite.py)
        around one block per binding."""
        return _skeleton_text(self.blocks)

    def format_sources(self) -> tuple[list[str], list[str]]:
        """What the format stage sends to black, and what each is: the header and the blocks
        that are not black-clean as rendered (a long name splits a line)."""
        dirty = [block for block, clean in zip(self.blocks, self.clean) if not clean]
        return [self.header, *dirty], [TEST_MODULE_WHAT[0], *(f"{TEST_MODULE_WHAT[1]} ({_block_name(b)})" for b in dirty)]

    def with_formatted(self, formatted: Sequence[str]) -> SuiteParts:
        """These parts with black's output for `format_sources()`, in its order."""
        header, rest = formatted[0], iter(formatted[1:])
        blocks = tuple(block if clean else next(rest).strip("\n") for block, clean in zip(self.blocks, self.clean))
        return replace(self, header=header, blocks=blocks, clean=(True,) * len(blocks))

    def text(self) -> str:
        pieces = [self.header.rstrip("\n")]
        for chunk in self.chunks:
            pieces.append("\n".join([f"# %% {chunk.path}", *chunk.comments, chunk.code]))
        pieces.append("# %% bindings: every check on every component of the script")
        pieces.append(self.skeleton.strip("\n"))
        return "\n\n\n".join(pieces) + "\n"


def render_tests(compiled: CompiledSpec) -> str:
    """The emitted test module alone (build.py runs the same steps inside its one pass)."""
    from generator.cache import default_cache_dir
    from generator.formatting import format_many

    parts = suite_parts(compiled)
    sources, what = parts.format_sources()
    return parts.with_formatted(format_many(sources, cache_dir=default_cache_dir(Path(compiled.index.root)), what=what)).text()


TEST_MODULE_WHAT = ("the generated test module header", "the generated test binding")


def _skeleton_text(blocks: Sequence[str]) -> str:
    return environment().get_template("test_module.py.j2").render(blocks=blocks).strip("\n")


def _block_name(block: str) -> str:
    return block.split("(", 1)[0].removeprefix("def ")


def binding_block(binding: Binding, doc: str) -> tuple[str, bool]:
    """One binding's test function laid out as black lays it out, and whether that is certain.

    A `def` line, a one-line docstring and one call: black keeps each line that fits in
    `LINE_LENGTH` columns; a `def` line that does not fit becomes ``def name(`` / the parameter
    with a magic trailing comma / ``) -> None:``, and a call that does not fit is split at its
    outer parentheses, the inner call on its own line; a one-line docstring is never split.
    Certain when the pieces are ASCII, the docstring is plainly triple-quoted (black would
    requote a `repr`) and the split lines fit; otherwise the format stage sends the block to
    black. Checked against black on every shipped spec and on generated names (tests/test_testsuite.py).
    """
    b = binding
    call = f"{b.factory}({b.component}, {b.fixture}(tmp_path))"
    certain = doc.startswith('"""') and "\n" not in doc and (b.test_name + b.check + call + doc).isascii()
    head = f"def {b.test_name}(tmp_path: Path) -> None:"
    if len(head) > LINE_LENGTH:
        head = f"def {b.test_name}(\n    tmp_path: Path,\n) -> None:"
        certain = certain and len(f"def {b.test_name}(") <= LINE_LENGTH
    line = f"    {b.check}({call})"
    if len(line) > LINE_LENGTH:
        line = f"    {b.check}(\n        {call}\n    )"
        certain = certain and len(f"        {call}") <= LINE_LENGTH and len(f"    {b.check}(") <= LINE_LENGTH
    return f"{head}\n    {doc}\n{line}", certain


def suite_bindings(compiled: CompiledSpec) -> list[tuple[Binding, str]]:
    """Each planned check bound to its component, with its test's docstring literal."""
    suite = compiled.tests
    assert suite is not None
    names = suite.names
    bindings = [
        Binding(
            test_name=_test_name(p.component.kind, p.component.name, p.check[1]),
            check=names[p.check],
            component=names[p.component.key],
            fixture=names[p.fixture],
            label=f"{p.component.kind} {p.component.name!r}",
            factory="make_factory" if p.factory is None else names[p.factory],
        )
        for p in suite.planned
    ]
    return [(b, docstring_source(f"Contract {b.check} holds for {b.label} ({b.component}).")) for b in bindings]


def suite_parts(compiled: CompiledSpec) -> SuiteParts:
    """The test module's pieces, from the checks the compile stages resolved and inlined."""
    spec, suite = compiled.spec, compiled.tests
    if suite is None:
        raise SigmaeError(f"spec {spec.name!r}: its outputs do not include tests, so none were compiled", str(spec.path), 1, 1)
    provided = suite.provided
    chunks = chunk_views(suite.program) if suite.program is not None else []
    imports = list(suite.program.imports) if suite.program is not None else []
    bound = suite_bindings(compiled)
    bindings = [b for b, _ in bound]
    laid_out = [binding_block(b, doc) for b, doc in bound]
    # Import from the script exactly the names the inlined checks and the bindings use.
    used = _used_names(bindings) | suite.script_reads
    script_names = sorted({name for name in provided.values() if name in used} | {"main"})
    base_imports = ["import os", "import sys", "from pathlib import Path", "from typing import Any, Callable", "import json", "import torch", "from hypothesis import HealthCheck, settings"]
    header = environment().get_template("test_header.py.j2").render(
        spec=spec,
        imports=merge_imports([*imports, *base_imports]),
        script_names=script_names,
    )
    return SuiteParts(header, tuple(chunks), tuple(block for block, _ in laid_out), tuple(certain for _, certain in laid_out))
