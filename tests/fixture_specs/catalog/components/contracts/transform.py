"""Contract checks for fixture transforms, and their fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from hypothesis import given, strategies as st

from components.registry import fixture_registry


def check_fixed_length(factory: Callable[..., Any]) -> None:
    """Output length is `target_frames` for any input length."""

    @given(st.lists(st.floats(-1, 1), max_size=12), st.integers(1, 8))
    def inner(signal: list[float], frames: int) -> None:
        transform = factory(target_frames=frames)
        assert len(transform(signal)) == frames

    inner()


@fixture_registry.register("transform/scale")
def scale_fixture(workdir: Path) -> dict[str, Any]:
    return {"factor": 2.0}
