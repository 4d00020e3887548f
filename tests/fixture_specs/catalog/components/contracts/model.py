"""Contract checks for fixture models, and their small-instance fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from hypothesis import given, strategies as st

from components.registry import fixture_registry


def check_output_width(factory: Callable[..., Any]) -> None:
    """forward() returns `width` finite values for any feature list."""

    @given(st.lists(st.floats(-10, 10), min_size=1, max_size=6))
    def inner(features: list[float]) -> None:
        model = factory()
        out = model.forward(features)
        assert len(out) == model.width
        assert all(abs(value) < float("inf") for value in out)

    inner()


@fixture_registry.register("model/tiny")
def tiny_fixture(workdir: Path) -> dict[str, Any]:
    return {"width": 3}


@fixture_registry.register("model/deep")
def deep_fixture(workdir: Path) -> dict[str, Any]:
    return {"depth": 2}
