"""Toy data sets: a CSV-backed one and a synthetic one for --smoke."""

from __future__ import annotations

import csv
from pathlib import Path

from components.data.base import BaseData, Record
from components.registry import data_registry


def helper(index: int, num_classes: int) -> int:
    """Round-robin label of an item (collides with models.tiny.helper on purpose)."""
    return index % num_classes


@data_registry.register("toy")
class ToyData(BaseData):
    """Rows of `root/items.csv`: key,label,fold,value."""

    def __init__(
        self,
        root: str = "data/toy",
        folds: list[int] | None = None,
        download: bool = False,
    ) -> None:
        path = Path(root) / "items.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; pass --data-dir or use --smoke")
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        self.values = [float(row[3]) for row in rows]
        self.records = [Record(row[0], int(row[1]), int(row[2])) for row in rows]
        self.class_names = sorted({row[1] for row in rows})
        if folds is not None:
            keep = [i for i, record in enumerate(self.records) if record.fold in folds]
            self.records = [self.records[i] for i in keep]
            self.values = [self.values[i] for i in keep]

    def signal(self, index: int) -> list[float]:
        return [self.values[index]] * 3


@data_registry.register("synthetic_toy")
class SyntheticToy(BaseData):
    """Deterministic synthetic items, `num_folds` round-robin folds."""

    def __init__(
        self, num_items: int = 8, num_classes: int = 2, num_folds: int = 2
    ) -> None:
        self.records = [
            Record(f"index:{i}", helper(i, num_classes), 1 + i % num_folds)
            for i in range(num_items)
        ]
        self.class_names = [f"class{i}" for i in range(num_classes)]

    def signal(self, index: int) -> list[float]:
        return [float(index % 5), 1.0, -1.0]
