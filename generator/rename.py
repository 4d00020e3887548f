"""Scope-aware renaming of one top-level definition, with libcst.

The inliner calls this only for the few definitions that need it (a name collision, a
``module.attr`` reference through ``import components.x as m``, or a catalog import inside
a function); everything else is emitted as written. Only references that resolve to the
module level are rewritten: locals, parameters, attributes and keyword names that happen
to share the name are left alone, and a local that would hide the new name is an error.
"""

from __future__ import annotations

import libcst as cst
from libcst.helpers import get_full_name_for_node
from libcst.metadata import BuiltinScope, GlobalScope, MetadataWrapper, ScopeProvider

from generator.analysis import CatalogError

_MODULE_LEVEL = (GlobalScope, BuiltinScope)  # libcst scopes whose names are the program's globals


def rewrite_names(
    code: str,
    *,
    names: dict[str, str],
    attrs: dict[tuple[str, str], str],
    local_imports: dict[str, str],
    where: str,
    package: str = "components",
) -> str:
    """``code`` with module-level ``names`` renamed, ``alias.attr`` replaced and local imports gone.

    ``names``: old -> new for module-level names; ``attrs``: (module alias, attribute) -> new
    name; ``local_imports``: the local name a function-local ``from <package>.x import y``
    binds -> the emitted name (the import is deleted, or becomes ``y = new``).
    """
    module = cst.parse_module(code)
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    finder = _ReferenceFinder()
    wrapper.module.visit(finder)
    return wrapper.visit(_Renamer(names, attrs, local_imports, finder.references, where, package)).code


class _ReferenceFinder(cst.CSTVisitor):
    """Name nodes that are references or bindings (not attribute names, keywords, imports)."""

    def __init__(self) -> None:
        self.references: set[cst.Name] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.references.add(node)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False

    def visit_Import(self, node: cst.Import) -> bool:
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        return False


class _Renamer(cst.CSTTransformer):
    """Rewrites references to module-level names, scope-aware (locals are left alone)."""

    METADATA_DEPENDENCIES = (ScopeProvider,)

    def __init__(
        self,
        names: dict[str, str],
        attrs: dict[tuple[str, str], str],
        local_imports: dict[str, str],
        references: set[cst.Name],
        where: str,
        package: str,
    ) -> None:
        super().__init__()
        self.names = names
        self.attrs = attrs
        self.local_imports = local_imports
        self.package = package
        self.references = references
        self.where = where

    def _is_global(self, node: cst.Name) -> bool:
        if node not in self.references:
            return False
        scope = self.get_metadata(ScopeProvider, node, None)
        if scope is None:
            return False
        assignments = scope[node.value]
        # No visible assignment: a module-level name defined elsewhere (or a builtin).
        return all(isinstance(a.scope, _MODULE_LEVEL) for a in assignments)

    def _check_free(self, node: cst.CSTNode, new: str) -> None:
        scope = self.get_metadata(ScopeProvider, node, None)
        if scope is not None and any(not isinstance(a.scope, _MODULE_LEVEL) for a in scope[new]):
            raise CatalogError(
                f"{self.where}: inlining needs the module-level name {new!r} here, but a local variable "
                f"of that name hides it; rename the local variable"
            )

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.Name:
        new = self.names.get(original_node.value)
        if new is not None and self._is_global(original_node):
            self._check_free(original_node, new)
            return updated_node.with_changes(value=new)
        return updated_node

    def leave_Attribute(self, original_node: cst.Attribute, updated_node: cst.Attribute) -> cst.BaseExpression:
        value = original_node.value
        if isinstance(value, cst.Name):
            new = self.attrs.get((value.value, original_node.attr.value))
            if new is not None and self._is_global(value):
                self._check_free(original_node, new)
                return cst.Name(new, lpar=updated_node.lpar, rpar=updated_node.rpar)
        return updated_node

    def _is_catalog_import(self, node: cst.BaseSmallStatement) -> bool:
        if not isinstance(node, cst.ImportFrom) or node.module is None or node.relative:
            return False
        module = get_full_name_for_node(node.module) or ""
        return module == self.package or module.startswith(self.package + ".")

    def leave_SimpleStatementLine(
        self, original_node: cst.SimpleStatementLine, updated_node: cst.SimpleStatementLine
    ) -> cst.BaseStatement | cst.FlattenSentinel | cst.RemovalSentinel:
        """A function-local catalog import disappears; `y = Emitted` where the name changed."""
        if not any(self._is_catalog_import(s) for s in updated_node.body):
            return updated_node
        kept: list[cst.BaseSmallStatement] = []
        for small in updated_node.body:
            if not self._is_catalog_import(small):
                kept.append(small)
                continue
            assert isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar)
            for alias in small.names:
                local = alias.evaluated_alias or alias.evaluated_name
                new = self.local_imports.get(local, local)
                if new != local:
                    kept.append(cst.Assign([cst.AssignTarget(cst.Name(local))], cst.Name(new)))
        if not kept:
            return cst.RemoveFromParent()
        return updated_node.with_changes(body=kept)

    def leave_IndentedBlock(
        self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock
    ) -> cst.IndentedBlock:
        if not updated_node.body:  # its only statement was a removed import
            return updated_node.with_changes(body=[cst.SimpleStatementLine([cst.Pass()])])
        return updated_node
