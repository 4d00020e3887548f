"""Data set interface of the fixture catalog."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    key: str
    label: int
    fold: int


class BaseData:
    """Indexable (signal, label) pairs with class names."""

    records: list[Record]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.records)

    def signal(self, index: int) -> list[float]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[list[float], int]:
        return self.signal(index), self.records[index].label
