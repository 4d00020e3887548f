"""Base classes: one reached through a base list, one only through an annotation."""

from __future__ import annotations

from dataclasses import dataclass, field


class Base:
    """Every block derives from this."""

    kind = "block"

    def describe(self) -> str:
        return f"{self.kind}:{type(self).__name__}"


class Shape:
    """Only ever named in an annotation."""


@dataclass
class Config:
    """Collides with the template's reserved name `Config`."""

    width: int = 4
    tags: list[str] = field(default_factory=list)


class NeverUsed(Base):
    pass
