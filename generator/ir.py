"""Records passed between the generator's stages (index -> resolve -> inline -> render).

Each stage is a pure function over these frozen records; nothing here imports the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # both import this module; the records only name them
    from generator.index import CatalogIndex
    from generator.spec import Spec

DefinitionKey = tuple[str, str]
"""(dotted module name, top-level name), e.g. ("components.models.blocks", "SwiGLU")."""

# Registry variable name in components/registry.py -> component kind used in specs and indexes.
REGISTRY_KINDS: dict[str, str] = {
    "model_registry": "model",
    "data_registry": "data",
    "transform_registry": "transform",
    "recipe_registry": "recipe",
    "loss_registry": "loss",
    "fixture_registry": "fixture",
}


@dataclass(frozen=True)
class Param:
    """One schema parameter of a component (what a spec's `with:` block may set)."""

    name: str
    annotation: str | None  # source text, e.g. "tuple[int, int]"; None when unannotated
    default: str | None  # source text of the default; None when the parameter is required
    lineno: int
    description: str = ""  # its `Args:` entry in the component's docstring, on one line

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class Definition:
    """A top-level statement that binds names: class, function, constant, or import."""

    module: str
    name: str
    kind: Literal["class", "function", "constant", "import"]
    lineno: int
    uses: frozenset[str]  # module-level names it reads (bodies, bases, decorators, defaults, annotations)


@dataclass(frozen=True)
class Component:
    """A registered catalog component, read statically from its decorator."""

    kind: str  # "model" | "data" | "transform" | "recipe" | "loss" | "fixture"
    name: str  # registered name, e.g. "audiomae++"
    version: str
    module: str  # e.g. "components.models.audiomae_pp"
    qualname: str  # top-level class or function name
    path: Path  # source file, relative to the catalog root's parent
    lineno: int
    params: tuple[Param, ...]
    doc: str = ""

    @property
    def key(self) -> DefinitionKey:
        return (self.module, self.qualname)


@dataclass(frozen=True)
class Reason:
    """Why a definition was reached: by whom (None for a root) and where the reference is."""

    definition: DefinitionKey
    needed_by: DefinitionKey | None
    location: str  # "components/models/blocks.py:42"
    context: str = ""  # where in `needed_by` the reference sits, e.g. "MacaronBlock.__init__"


@dataclass(frozen=True)
class Resolution:
    """Reached definitions in an order that executes (dependencies first, stable by source)."""

    order: tuple[DefinitionKey, ...]
    reasons: dict[DefinitionKey, Reason] = field(hash=False)
    excluded: int  # top-level definitions of touched modules that were left out
    external_imports: tuple[str, ...] = ()  # import statements (stdlib/torch) the reached code needs
    provided: tuple[DefinitionKey, ...] = ()  # reached but supplied from elsewhere: not in `order`


@dataclass(frozen=True)
class EmittedDefinition:
    """One catalog statement as emitted: its provenance comment, source and renames (the source map's unit)."""

    module: str
    path: str  # catalog file, "components/models/layers.py"
    names: tuple[str, ...]  # the catalog names it binds
    source_lines: tuple[int, int]  # first and last line of its source in the catalog file
    sha256: str  # short hash of its catalog source text (generator/inline.definition_hash)
    comment: str  # the provenance line right above it in the emitted code
    lines: int  # emitted lines, that comment included
    renames: tuple[tuple[str, str], ...] = ()  # emitted spelling -> catalog spelling ("Attention_layers" -> "Attention")


@dataclass(frozen=True)
class ModuleChunk:
    """The emitted code of one source module: becomes a `# %% <path>` section / notebook cell."""

    module: str
    path: str  # "components/models/blocks.py"
    docstring: str | None
    code: str  # black-formatted definitions, without imports
    section: str = "support"  # reader-order section it stands in (generator/sections.py)
    definitions: tuple[EmittedDefinition, ...] = ()  # its statements, in emitted order


@dataclass(frozen=True)
class InlinedProgram:
    """Catalog code ready to paste under a header: imports, then one chunk per module."""

    imports: tuple[str, ...]  # merged, deduplicated, sorted import lines ("" between stdlib and third party; no __future__)
    chunks: tuple[ModuleChunk, ...]
    names: dict[DefinitionKey, str] = field(hash=False)  # emitted name of every reached definition
    source_files: tuple[str, ...] = ()  # catalog files the code came from (for the provenance hash)

    @cached_property
    def emitted_spellings(self) -> dict[str, frozenset[str]]:
        """Each top-level name as the catalog spells it -> every name it was emitted under."""
        found: dict[str, set[str]] = {}
        for (_, name), emitted in self.names.items():
            found.setdefault(name, set()).add(emitted)
        return {name: frozenset(emitted) for name, emitted in found.items()}


@dataclass(frozen=True)
class PlannedCheck:
    """One contract check to bind to one component in the emitted test module."""

    component: Component
    check: DefinitionKey
    fixture: DefinitionKey
    factory: DefinitionKey | None  # the kind's `<kind>_factory`; None: `make_factory`


@dataclass(frozen=True)
class CheckSuite:
    """The emitted test module's catalog code: its checks, resolved and inlined beside the script."""

    planned: tuple[PlannedCheck, ...]
    program: InlinedProgram | None  # None when no check applies
    names: dict[DefinitionKey, str] = field(hash=False)  # emitted name of every definition it binds
    provided: dict[DefinitionKey, str] = field(default_factory=dict, hash=False)  # the script's definitions (not its imports)
    script_reads: frozenset[str] = frozenset()  # emitted names of the script's definitions the inlined checks read


@dataclass(frozen=True)
class CompiledSpec:
    """A validated spec with its inlined program(s): what every emitter starts from."""

    spec: Spec
    index: CatalogIndex
    resolution: Resolution
    program: InlinedProgram
    spec_hash: str
    sources: tuple[str, ...]
    tests: CheckSuite | None = None  # None unless the spec's outputs include tests
    reused: bool = False  # resolution, program and tests came from the compile cache (generator/compiled.py)
