"""Emit the Colab notebook: the script's code as cells, plus set-up, parameters, run and plots.

The code cells hold exactly the script's pieces (`render.ScriptParts`), in the script's reader
order: the imports, then per section (configuration, model, objective, data, recipes, main,
support) a markdown cell saying what a user edits there and one cell per catalog module (each
after a markdown cell naming the module and summarising its docstring); support cells are
collapsed. Executing them defines the same names as importing the script. Around them: a title (with an "Open in Colab" badge when the notebook
has a GitHub address: generator/repository.py), a set-up cell that reports the accelerator,
a `parameters`-tagged cell (papermill's convention), a run cell and a plot cell. Cell ids are derived from positions, so rebuilds are byte-identical.

Cells are plain nbformat v4.5 dictionaries serialised the way `nbformat.writes` does (sorted
keys, one-space indent, sources split into lines): importing nbformat and validating every
cell would cost more than the rest of a warm build. The tests run `nbformat.validate`.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # the C encoder when built
from typing import Any

import generator
from generator.errors import OutputError
from generator.render import ScriptParts, docstring_summary, environment, literal_source
from generator.repository import DEFAULT_BRANCH, github_repository, shown
from generator.sections import SUPPORT
from generator.spec import Spec

# Names the notebook defines beyond the script's own (set-up, parameters, run and plot cells).
NOTEBOOK_ONLY_NAMES = frozenset(
    {"importlib", "sys", "IN_COLAB", "report_accelerator", "SMOKE", "DOWNLOAD", "OUT_DIR", "EXTRA_ARGS", "ARGV", "run_steps", "dataclasses", "Path", "Image", "display", "png", "metrics"}
)


def colab_url(repo_url: str, notebook_path: str, branch: str = DEFAULT_BRANCH) -> str:
    """Colab's URL for a notebook committed to a GitHub repository (generator/repository.py finds both)."""
    repository = github_repository(repo_url)
    if repository is None:
        raise OutputError(f"repo URL {shown(repo_url)!r} must look like https://github.com/OWNER/REPO (Colab opens notebooks from GitHub); pass --repo-url")
    owner, repo = repository
    return f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/{notebook_path.lstrip('/')}"


def can_download(spec: Spec) -> bool:
    """Whether the spec's data set fetches itself (`--download`): its component has a `download` parameter."""
    return any(param.name == "download" for param in spec.data.params)


def spec_description(spec: Spec) -> str:
    """The spec's description, or a one-line default naming it (markdown)."""
    return spec.description.strip() or f"Masked-autoencoder training for `{spec.name}`."


def _render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context).strip("\n")


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def markdown_cell(text: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def code_cell(text: str, tags: tuple[str, ...] = (), *, collapsed: bool = False) -> dict[str, Any]:
    """A code cell; ``collapsed``: its source hidden (Colab's form view, Jupyter's ``source_hidden``)."""
    metadata: dict[str, Any] = {"tags": list(tags)} if tags else {}
    if collapsed:
        metadata.update({"cellView": "form", "jupyter": {"source_hidden": True}})
    return {"cell_type": "code", "execution_count": None, "metadata": metadata, "outputs": [], "source": text}


def section_cells(parts: ScriptParts) -> list[dict[str, Any]]:
    """The script's code in reader order: per section a heading saying what a user edits there,
    then a markdown and a code cell per chunk; support cells are collapsed."""
    cells = []
    for section in parts.sections():
        cells.append(markdown_cell(f"## {section.title}\n\n{section.edits}"))
        collapsed = section.name == SUPPORT
        for chunk in section.chunks:
            if chunk.generated:
                cells.append(markdown_cell(f"### {chunk.path}"))
            else:
                cells.append(markdown_cell(_render("notebook_module.md.j2", path=chunk.path, summary=docstring_summary(chunk.docstring))))
            cells.append(code_cell(chunk.code, collapsed=collapsed))
    return cells


def notebook_document(spec: Spec, parts: ScriptParts, *, spec_hash: str, colab_url: str | None = None) -> dict[str, Any]:
    """The notebook as an nbformat v4.5 document (`notebook_text` writes it); each cell's source
    is a list of lines; its title has an Open-in-Colab badge when `colab_url` is known."""
    context = {"name": spec.name, "can_download": can_download(spec)}
    cells = [
        markdown_cell(
            _render(
                "notebook_title.md.j2",
                description=spec_description(spec),
                colab_url=colab_url,
                version=generator.__version__,
                spec_hash=spec_hash,
                **context,
            )
        ),
        markdown_cell(_render("notebook_setup.md.j2", **context)),
        code_cell(_render("notebook_setup.py.j2", **context)),
        code_cell(_render("notebook_parameters.py.j2", out_dir=literal_source(f"runs/{spec.name}"), **context), tags=("parameters",)),
        markdown_cell("## Code\n\nThe imports, then the code of the script in its order, one cell per catalog module."),
        code_cell("from __future__ import annotations\n\n" + "\n".join(parts.imports)),
        *section_cells(parts),
    ]
    steps = [{"section": c.section, "use": c.component.name, "summary": docstring_summary(c.component.doc)} for c in spec.steps]
    cells.append(markdown_cell(_render("notebook_run.md.j2", steps=steps, **context)))
    cells.append(code_cell(_render("notebook_run.py.j2", run_pipeline=parts.run_pipeline, **context)))
    for position, step in enumerate(steps, start=1):
        cells.append(markdown_cell(f"### Step {position}: `{step['section']}` (recipe `{step['use']}`)"))
        cells.append(code_cell(f"run_steps({position})"))
    cells.append(markdown_cell("## Plots and metrics\n\nPNG plots are written when matplotlib is installed; the metrics are JSON lines."))
    cells.append(code_cell(_render("notebook_plots.py.j2", **context)))
    for position, cell in enumerate(cells):
        cell["id"] = f"cell-{position:02d}"
        cell["source"] = _lines(cell["source"])
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "accelerator": "GPU",
            "colab": {"provenance": [], "gpuType": "T4"},
            "sigmae_gen": {"spec": spec.name, "version": generator.__version__, "sha256": spec_hash},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return notebook


def notebook_text(notebook: dict[str, Any]) -> str:
    """The document's text: exactly `json.dumps(notebook, sort_keys=True, indent=1,
    ensure_ascii=False, separators=(",", ": "))` and a newline, as nbformat writes it.

    json's indented dump is its pure-Python encoder, about a tenth of a warm build for a
    9,000-line notebook; this writer escapes with the C string encoder and joins each list of
    strings (the cells' sources) in one call, ~2x faster (tests/test_notebook.py compares the two)."""
    out: list[str] = []
    _write_json(notebook, "\n", out)
    out.append("\n")
    return "".join(out)


def _write_json(value: Any, newline: str, out: list[str]) -> None:
    """Append ``value``'s indented JSON to ``out``; ``newline``: a newline and the current indent."""
    if isinstance(value, str):
        out.append(encode_basestring(value))
    elif isinstance(value, dict) and value:
        inner = newline + " "
        separator = "{"
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError(f"notebook keys are strings, not {key!r}")
            out.append(f"{separator}{inner}{encode_basestring(key)}: ")
            _write_json(value[key], inner, out)
            separator = ","
        out.append(newline + "}")
    elif isinstance(value, (list, tuple)) and value:
        inner = newline + " "
        if all(type(item) is str for item in value):
            out.append("[" + inner + ("," + inner).join(map(encode_basestring, value)) + newline + "]")
            return
        separator = "["
        for item in value:
            out.append(separator + inner)
            _write_json(item, inner, out)
            separator = ","
        out.append(newline + "]")
    else:  # numbers, booleans, None, empty containers: json's own spelling
        out.append(json.dumps(value))
