"""The emitted-code checks: pyflakes' findings plus dead module-level definitions."""

from __future__ import annotations

import textwrap

import pytest

from generator.lint import lint


def problems(source: str) -> list[str]:
    return [p.message for p in lint(textwrap.dedent(source), "m.py")]


def test_a_clean_module_has_no_problems() -> None:
    assert problems(
        """
        from __future__ import annotations
        import math

        RATE = 2.0

        def scale(x: float) -> float:
            return math.sqrt(x) * RATE

        def main() -> int:
            return int(scale(4.0))
        """
    ) == []


def test_a_string_that_looks_like_a_name_is_not_a_use_of_it() -> None:
    found = problems(
        """
        def optimizer():
            return None

        def main():
            return {"optimizer": 0}
        """
    )
    assert found == ["'optimizer' is defined but never used"]


def test_unused_imports_and_undefined_names_come_from_pyflakes() -> None:
    found = problems(
        """
        from __future__ import annotations
        import os

        def main(x: Missing) -> int:
            return undefined_thing
        """
    )
    assert "'os' imported but unused" in found
    assert "undefined name 'Missing'" in found
    assert "undefined name 'undefined_thing'" in found


def test_all_entries_and_quoted_annotations_are_uses() -> None:
    assert problems(
        """
        __all__ = ["exported"]

        def exported():
            return 1

        class Later:
            pass

        def main(x: "Later") -> None:
            return None
        """
    ) == []


def test_dead_definitions_inside_module_level_try_are_found() -> None:
    found = problems(
        """
        try:
            HELPER = 1
        except ImportError:
            HELPER = None

        def main():
            return 0
        """
    )
    assert found == ["'HELPER' is defined but never used"]


def test_a_module_that_does_not_compile_raises() -> None:
    with pytest.raises(SyntaxError):
        lint("def broken(:\n", "m.py")
