"""Contract checks for fixture data sets, and their fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from hypothesis import given, strategies as st

from components.registry import fixture_registry


def check_items_are_labelled(factory: Callable[..., Any]) -> None:
    """Every item is a (signal, label) pair with a label inside the class list."""
    data = factory()

    @given(st.integers(min_value=0, max_value=10_000))
    def inner(position: int) -> None:
        signal, label = data[position % len(data)]
        assert isinstance(signal, list) and signal
        assert 0 <= label < max(2, len(data.class_names))

    inner()


@fixture_registry.register("data/toy")
def toy_fixture(workdir: Path) -> dict[str, Any]:
    root = workdir / "toy"
    root.mkdir(parents=True, exist_ok=True)
    (root / "items.csv").write_text("a,0,1,0.5\nb,1,2,1.5\n")
    return {"root": str(root)}


@fixture_registry.register("data/synthetic_toy")
def synthetic_fixture(workdir: Path) -> dict[str, Any]:
    return {"num_items": 4}
