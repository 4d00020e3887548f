"""`sigmae-gen new KIND NAME`: a new catalog module with its registration and a fixture stub.

The module follows the catalog rules (components/README.md §1) and subclasses the kind's
interface; its contract fixture is appended to `components/contracts/<kind>.py` and raises
until it is filled in, so the toolkit's contract tests fail — naming it — until then.
"""

from __future__ import annotations

import ast
import keyword
import re
from pathlib import Path

from generator.cache import atomic_write_bytes
from generator.errors import SigmaeError
from generator.render import environment
from generator.spec import did_you_mean

KIND_FOLDERS = {"model": "models", "data": "data", "transform": "transforms", "recipe": "recipes"}
_NAME = re.compile(r"^[a-z][a-z0-9_+.\-]*$")


def module_name(name: str) -> str:
    """A Python module name for a registered name: 'audiomae++' -> 'audiomae_pp'."""
    text = name.replace("++", "_pp").replace("+", "_p")
    text = re.sub(r"[^a-z0-9_]", "_", text).strip("_")
    text = re.sub(r"_+", "_", text)
    if keyword.iskeyword(text):
        text += "_"
    return text


def class_name(module: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in module.split("_") if part)


def _bound_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _with_imports(text: str, needed: dict[str, str]) -> str:
    """`text` with the import lines of `needed` (name -> statement) it lacks, after the future import."""
    bound = _bound_names(ast.parse(text))
    missing = [statement for name, statement in needed.items() if name not in bound]
    if not missing:
        return text
    lines = text.splitlines(keepends=True)
    insert_at = next((i + 1 for i, line in enumerate(lines) if line.startswith("from __future__ import")), 0)
    block = "".join(f"{statement}\n" for statement in missing)
    if insert_at:
        block = "\n" + block
    return "".join(lines[:insert_at]) + block + "".join(lines[insert_at:])


def _add_to_package(init_text: str, module: str, name: str) -> str:
    """A package `__init__.py` that also imports `name` from `module` (and lists it in `__all__`).

    The catalog's packages import their modules explicitly, so the run-time registry (and the
    toolkit's contract tests over it) only see a component its package imports.
    """
    tree = ast.parse(init_text)
    lines = init_text.splitlines(keepends=True)
    statement = f"from {module} import {name}\n"
    if statement in lines:
        return init_text
    all_node = next(
        (n for n in tree.body if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)),
        None,
    )
    if isinstance(all_node, ast.Assign) and isinstance(all_node.value, (ast.List, ast.Tuple)):
        names = [e.value for e in all_node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        names = sorted({*names, name})
        one_line = "__all__ = [" + ", ".join(f'"{n}"' for n in names) + "]\n"
        block = one_line if len(one_line) <= 100 else "__all__ = [\n" + "".join(f'    "{n}",\n' for n in names) + "]\n"
        lines[all_node.lineno - 1 : all_node.end_lineno] = [block]
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    at = imports[-1].end_lineno if imports else 0
    lines.insert(at, statement)
    return "".join(lines)


def scaffold(root: Path, kind: str, name: str) -> list[Path]:
    """Write the new module and the fixture stub under `root/components/`; returns the paths."""
    if kind not in KIND_FOLDERS:
        raise SigmaeError(f"cannot scaffold kind {kind!r}.{did_you_mean(kind, KIND_FOLDERS)} Kinds: {', '.join(KIND_FOLDERS)}")
    if not _NAME.match(name) or not module_name(name):
        raise SigmaeError(f"component name {name!r} must start with a lowercase letter and use a-z, 0-9, _ + . - only, e.g. my_model")
    package = root / "components"
    if not package.is_dir():
        raise SigmaeError(f"no catalog package at {package}; run in the project or pass --catalog DIR", str(package))
    module = module_name(name)
    relative = Path("components") / KIND_FOLDERS[kind] / f"{module}.py"
    target = root / relative
    if target.exists():
        raise SigmaeError(f"{relative.as_posix()} already exists; choose another name or edit that module", str(target))
    contracts_relative = Path("components") / "contracts" / f"{kind}.py"
    contracts = root / contracts_relative
    context = {
        "name": name,
        "name_literal": repr(name),
        "module": module,
        "class_name": class_name(module),
        "function_name": module,
        "title": f"{kind} {name!r}".replace('"', ""),
        "path": relative.as_posix(),
        "kind": kind,
        "fixture_key": f"{kind}/{name}",
        "fixture_literal": repr(f"{kind}/{name}"),
        "contracts_path": contracts_relative.as_posix(),
    }
    module_text = environment().get_template(f"new/{kind}.py.j2").render(**context).rstrip("\n") + "\n"
    existing = contracts.read_text(encoding="utf-8") if contracts.exists() else (
        f'"""Contract checks and fixtures for catalog {kind} components."""\n\nfrom __future__ import annotations\n'
    )
    taken = _bound_names(ast.parse(existing))
    fixture_name = f"{module}_fixture"
    while fixture_name in taken:
        fixture_name += "_"
    if f"register({context['fixture_literal']})" in existing:
        raise SigmaeError(f"{contracts_relative.as_posix()} already registers fixture {context['fixture_key']!r}", str(contracts))
    fixture_text = environment().get_template("new/fixture.py.j2").render(fixture_name=fixture_name, **context)
    contracts_text = _with_imports(
        existing.rstrip("\n") + "\n",
        {
            "Path": "from pathlib import Path",
            "Any": "from typing import Any",
            "fixture_registry": "from components.registry import fixture_registry",
        },
    ).rstrip("\n") + "\n" + fixture_text.rstrip("\n") + "\n"
    init_relative = relative.parent / "__init__.py"
    init = root / init_relative
    exported = context["function_name"] if kind == "recipe" else context["class_name"]
    dotted = ".".join(relative.with_suffix("").parts)
    init_text = _add_to_package(init.read_text(encoding="utf-8") if init.exists() else "", dotted, exported)
    for text, path in ((module_text, relative), (contracts_text, contracts_relative), (init_text, init_relative)):
        try:
            ast.parse(text)
        except SyntaxError as exc:  # pragma: no cover - templates are tested
            raise SigmaeError(f"scaffold for {path.as_posix()} does not parse: {exc}") from None
    _write_all([(target, module_text), (contracts, contracts_text), (init, init_text)])
    return [target, contracts, init]


def _write_all(files: list[tuple[Path, str]]) -> None:
    """Write every file or none: each atomically; on a failure the ones already written get
    their old contents back (or go, if they are new) before the error travels on."""
    originals = {path: path.read_bytes() if path.exists() else None for path, _ in files}
    written: list[Path] = []
    try:
        for path, text in files:
            atomic_write_bytes(path, text.encode("utf-8"))
            written.append(path)
    except BaseException:
        for path in reversed(written):
            old = originals[path]
            if old is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(path, old)
        raise
