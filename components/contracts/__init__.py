"""Catalog: contracts.

``components/contracts/<kind>.py`` holds the contract checks of one component kind and the
fixtures that build small instances (components/README.md §5). A check applies to every
registered component of its kind unless it is decorated with ``@applies_to("name", ...)``,
which limits it to the components registered under those names. The generator reads the
decorator statically, so its arguments must be string literals. ``factory_accepts`` lets a
check exercise a keyword (``use_rope``, ``sample_rate``, ``seed``...) only where the component
has it.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

Check = TypeVar("Check", bound=Callable[..., Any])


def applies_to(*names: str) -> Callable[[Check], Check]:
    """Limit a contract check to the components registered under ``names`` (of its kind).

    Used for checks of a property only some components have, e.g. InfoNCE's analytic value.
    The toolkit's tests read ``check.applies_to``; the generator reads the literal arguments.
    """
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(
            "applies_to needs one or more component names (string literals)"
        )

    def mark(check: Check) -> Check:
        check.applies_to = frozenset(names)  # type: ignore[attr-defined]
        return check

    return mark


def factory_accepts(factory: Callable[..., Any], name: str) -> bool:
    """Whether the constructor of what ``factory()`` builds takes a ``name`` keyword.

    Builds one instance: the checks' factories wrap the component in fixture kwargs, so the
    constructor to inspect is that of the built object's class.
    """
    return name in inspect.signature(type(factory()).__init__).parameters
