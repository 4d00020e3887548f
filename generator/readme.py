"""Emit the per-build README.md: how to run the script (GPU box, torchrun, Colab) and every flag.

Flags come from the same records as the script's Config: the runtime's `RunOptions` fields
(read statically from the catalog) become `--<field>` flags, each section's parameters
`--<section>.<field>`, with the defaults the script carries and the descriptions of the
components' `Args:` docstring sections (the same text as the script's `--help`).
"""

from __future__ import annotations

import ast
from typing import Mapping

import generator
from generator.notebook import can_download, spec_description
from generator.ir import CompiledSpec, Param
from generator.render import config_params, environment, literal_source, spec_reference
from generator.resolve import RUNTIME_MODULE


def run_option_params(index) -> tuple[Param, ...]:
    """The fields of the runtime's RunOptions dataclass (ClassVar ones excluded), as the index read them."""
    statement = index.statements.get((RUNTIME_MODULE, "RunOptions"))
    if statement is None or statement.params is None:
        return ()
    return statement.params


def run_option_flags(index) -> list[tuple[str, str]]:
    """(`--flag`, default source) for each field of the runtime's RunOptions dataclass."""
    return [
        (f"--{param.name.replace('_', '-')}", "(required)" if param.default is None else ast.unparse(ast.parse(param.default, mode="eval")))
        for param in run_option_params(index)
    ]


def flag_cell(flag: str, param: Param) -> str:
    """`--smoke` / `--no-smoke` for a boolean (as `--help` shows it), else the flag."""
    if (param.annotation or "").replace(" ", "") in ("bool", "bool|None", "Optional[bool]"):
        return f"`{flag}` / `--no-{flag[2:]}`"
    return f"`{flag}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _prose_cell(text: str) -> str:
    """A description in a table cell: its inline code (backticks) kept."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_readme(compiled: CompiledSpec, files: Mapping[str, str], *, colab_url: str | None = None) -> str:
    spec = compiled.spec
    flags = [
        (flag_cell(flag, param), _cell(default), _prose_cell(param.description))
        for (flag, default), param in zip(run_option_flags(compiled.index), run_option_params(compiled.index))
    ]
    for choice in spec.sections:
        for param in config_params(choice):
            flag = f"--{choice.section}.{param.name}"
            flags.append((flag_cell(flag, param), _cell(literal_source(choice.values[param.name])), _prose_cell(param.description)))
    choices = [
        {"section": c.section, "component": _cell(c.component.name), "kind": c.component.kind, "version": _cell(c.component.version)}
        for c in spec.sections
    ]
    smoke_rows = []
    if spec.smoke_data is not None:
        smoke_rows.append(f"data → `{_cell(spec.smoke_data.component.name)}` {_cell(literal_source(spec.smoke.get('data', {})))}")
    for section, overrides in spec.smoke.items():
        if section != "data":
            smoke_rows.append(f"{section} {_cell(literal_source(dict(overrides)))}")
    text = environment().get_template("build_readme.md.j2").render(
        name=spec.name,
        description=spec_description(spec),
        version=generator.__version__,
        spec_file=_cell(spec_reference(spec, compiled.index.root)),
        spec_hash=compiled.spec_hash,
        has_notebook=f"{spec.name}.ipynb" in files,
        has_tests=f"test_{spec.name}.py" in files,
        colab_url=colab_url,
        can_download=can_download(spec),
        audio_cache=any(param.name == "cache_dir" for param in spec.data.params),
        choices=choices,
        smoke_rows=smoke_rows,
        flags=flags,
    )
    return text.rstrip("\n") + "\n"
