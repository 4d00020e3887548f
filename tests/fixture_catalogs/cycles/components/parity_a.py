"""Half of a mutual recursion across two modules."""

from __future__ import annotations

from components.parity_b import Odd, is_odd
from components.registry import recipe_registry


def is_even(n: int) -> bool:
    return True if n == 0 else is_odd(n - 1)


class Even:
    def flip(self) -> Odd:
        return Odd()


def countdown(n: int) -> list[int]:
    # Self-recursion: a cycle of one.
    return [] if n < 0 else [n, *countdown(n - 1)]


@recipe_registry.register("parity")
def parity(ctx: object, /, *, n: int = 7) -> dict[str, object]:
    return {"even": is_even(n), "odd": is_odd(n), "flip": type(Even().flip().flip()).__name__, "down": countdown(3)}
