"""Emit `test_<name>.py`: the catalog's contract checks, inlined and bound to the script's classes.

For every registered component the script holds (model, transform, data sets, ...), each
`check_*` function of `components/contracts/<kind>.py` becomes one test, fed by the
component's registered contract fixture (`"<kind>/<name>"`). The checks and fixtures are
inlined by the same resolver and inliner as the script; every definition the script already
holds is imported from it instead of being emitted twice. Two end-to-end tests close the
suite: a smoke training run and a checkpoint round trip (`--resume`).

The module needs only the script beside it, torch, pytest and hypothesis.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from generator.errors import SigmaeError
from generator.ir import Component, DefinitionKey, InlinedProgram
from generator.render import chunk_views, docstring_source, environment, format_code, merge_imports

if TYPE_CHECKING:
    from generator.build import CompiledSpec

CONTRACTS_PACKAGE = "components.contracts"
# Names the test module's own skeleton defines; inlined contract code must not take them.
TEST_SKELETON_NAMES = ("SCRIPT", "HERE", "make_factory", "test_smoke_train_steps", "test_checkpoint_round_trip")


@dataclass(frozen=True)
class Binding:
    """One check applied to one component, with the fixture that builds its small instance."""

    test_name: str
    check: str  # emitted name of the check function
    component: str  # emitted name of the component in the script
    fixture: str  # emitted name of the fixture function
    label: str  # "model 'tiny'"


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


def bound_components(index, program: InlinedProgram) -> list[Component]:
    """Registered components (not fixtures) whose definitions the script contains, stable order."""
    found = [c for c in index.components.values() if c.kind != "fixture" and c.key in program.names]
    return sorted(found, key=lambda c: (c.kind, c.name))


def _test_name(kind: str, component: str, check: str) -> str:
    spelled = component.lower().replace("++", "_pp").replace("+", "_p")
    slug = "_".join(part for part in "".join(ch if ch.isalnum() else "_" for ch in spelled).split("_") if part) or "component"
    return f"test_{kind}_{slug}_{check.removeprefix('check_')}"


def plan(index, program: InlinedProgram) -> tuple[list[tuple[Component, DefinitionKey, DefinitionKey]], list[DefinitionKey]]:
    """(component, check key, fixture key) triples, and the resolver roots they need."""
    triples = []
    roots: list[DefinitionKey] = []
    for component in bound_components(index, program):
        module = contracts_module(index, component.kind)
        if module is None:
            continue
        checks = check_functions(index, module)
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
        for check in checks:
            triples.append((component, check, fixture.key))
            for key in (check, fixture.key):
                if key not in roots:
                    roots.append(key)
    return triples, roots


def _used_names(source: str) -> set[str]:
    tree = ast.parse(source)
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def render_tests(compiled: CompiledSpec) -> str:
    """The emitted test module's text."""
    from generator.inline import inline
    from generator.resolve import resolve

    spec, index, program = compiled.spec, compiled.index, compiled.program
    triples, roots = plan(index, program)
    # Definitions the script holds (not its imports: the test module imports those itself).
    provided = {key: name for key, name in program.names.items() if getattr(index.definitions.get(key), "kind", "import") != "import"}
    chunks: list = []
    imports: list[str] = []
    names: dict[DefinitionKey, str] = dict(provided)
    if roots:
        resolution = resolve(index, tuple(roots))
        reserved = (*TEST_SKELETON_NAMES, *(_test_name(c.kind, c.name, k[1]) for c, k, _ in triples))
        checks_program = inline(index, resolution, reserved=reserved, provided=provided)
        chunks = chunk_views(checks_program)
        imports = list(checks_program.imports)
        names.update(checks_program.names)
    bindings = [
        Binding(
            test_name=_test_name(component.kind, component.name, check[1]),
            check=names[check],
            component=names[component.key],
            fixture=names[fixture],
            label=f"{component.kind} {component.name!r}",
        )
        for component, check, fixture in triples
    ]
    body = "\n\n\n".join(chunk.code for chunk in chunks)
    skeleton = environment().get_template("test_module.py.j2").render(
        bindings=bindings,
        doc_literals={b.test_name: docstring_source(f"Contract {b.check} holds for {b.label} ({b.component}).") for b in bindings},
    )
    # Import from the script exactly the names the inlined checks and the bindings use.
    used = _used_names(body + "\n" + skeleton)
    script_names = sorted({name for name in provided.values() if name in used} | {"main"})
    base_imports = ["import os", "import sys", "from pathlib import Path", "from typing import Any, Callable", "from hypothesis import HealthCheck, settings"]
    header = environment().get_template("test_header.py.j2").render(
        spec=spec,
        imports=merge_imports([*imports, *base_imports]),
        script_names=script_names,
    )
    from generator.cache import default_cache_dir

    cache_dir = default_cache_dir(Path(index.root))
    pieces = [format_code(header, cache_dir).rstrip("\n")]
    for chunk in chunks:
        pieces.append("\n".join([f"# %% {chunk.path}", *chunk.comments, chunk.code]))
    pieces.append("# %% bindings: every check on every component of the script")
    pieces.append(format_code(skeleton, cache_dir).strip("\n"))
    return "\n\n\n".join(pieces) + "\n"
