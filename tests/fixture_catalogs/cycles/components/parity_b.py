"""The other half of the mutual recursion."""

from __future__ import annotations

from components.parity_a import Even, is_even


def is_odd(n: int) -> bool:
    return False if n == 0 else is_even(n - 1)


class Odd:
    def flip(self) -> Even:
        return Even()
