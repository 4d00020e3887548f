"""Blocks: reach helpers through a module alias, an aliased name and a decorator."""

from __future__ import annotations

import functools
from typing import Any, Callable

import components.util as u
from components.base import Base, Config, Shape
from components.util import SCALE as FACTOR

WIDTH = 4
UNUSED_WIDTH = 8


def tagged(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator used on a method: reached through the decorator list."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    wrapper.tagged = True  # type: ignore[attr-defined]
    return wrapper


def untouched() -> None:
    """Never referenced."""


class Block(Base):
    """A toy block: y = helper(x) * FACTOR * width."""

    def __init__(self, width: int = WIDTH, config: Config | None = None) -> None:
        self.width = width
        self.config = config or Config(width=width)

    @tagged
    def forward(self, x: float) -> float:
        width = self.width  # a local that shadows nothing global
        return u.helper(x) * FACTOR * width

    def shape(self) -> Shape | None:
        return None
