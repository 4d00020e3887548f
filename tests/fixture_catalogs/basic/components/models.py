"""Registered components of the fixture catalog."""

from __future__ import annotations

from components.layers import Block
from components.registry import model_registry, recipe_registry
from components.util import scale as util_scale


def scale(x: float) -> float:
    return x / 2


@model_registry.register("net", version="2.0")
class Net:
    """A stack of blocks."""

    def __init__(self, depth: int = 2, width: int = 4, *, name: str = "net") -> None:
        self.blocks = [Block(width) for _ in range(depth)]
        self.name = name

    def __call__(self, x: float) -> float:
        for block in self.blocks:
            x = block.forward(x)
        return scale(x) + sum(util_scale([x]))


@model_registry.register("tiny_net")
class TinyNet(Net):
    """Inherits its constructor: the index finds the parameters on Net."""


@recipe_registry.register("demo")
def demo(ctx: object, /, *, depth: int = 2, label: str = "demo") -> dict[str, object]:
    net = Net(depth=depth)
    return {"label": label, "out": net(1.0), "describe": net.blocks[0].describe()}


def unrelated() -> int:
    return 0
