"""The data set interface: labelled records with folds, and a signal per index.

Every data set is a list of ``Record`` s (what a sample is, its label and fold) and a way to
turn record ``i`` into a float32 signal: ``[N]`` for audio, ``[2, L]`` for IQ. Recipes split
data by folds only, so every record carries a fold >= 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Record:
    """One labelled sample: ``key`` is the file path or ``"index:<i>"``."""

    key: str
    label: int
    category: str
    fold: int
    lat: float | None = None
    lon: float | None = None


class SignalDataset(Dataset):
    """Base class of every registered data set.

    Subclasses fill ``records`` and ``class_names`` and implement ``load(record_index)``;
    ``ds[i]`` returns ``(signal, label)``.
    """

    signal_kind: Literal["audio", "iq"] = "audio"

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.class_names: list[str] = []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def available_folds(self) -> list[int]:
        """The distinct folds present, sorted."""
        return folds_of(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} must implement load(index)")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index < 0:
            index += len(self.records)
        if not 0 <= index < len(self.records):
            raise IndexError(
                f"{type(self).__name__} index {index} out of range for {len(self.records)} records"
            )
        return self.load(index), self.records[index].label

    def labels(self) -> list[int]:
        return [record.label for record in self.records]

    def indices_of_folds(self, folds: list[int]) -> list[int]:
        """Indices of the records whose fold is in ``folds`` (for k-fold recipes)."""
        return indices_in_folds(self.records, folds)


# Module-level so that anything holding ``records`` (a data set, a fold subset, a test
# stand-in) splits by folds the same way: the runtime and recipes call these.
def folds_of(records: Sequence[Record]) -> list[int]:
    """The distinct folds of ``records``, sorted."""
    return sorted({record.fold for record in records})


def indices_in_folds(records: Sequence[Record], folds: Iterable[int]) -> list[int]:
    """Indices of the records whose fold is in ``folds``, in record order."""
    wanted = set(folds)
    return [i for i, record in enumerate(records) if record.fold in wanted]


def filter_folds(
    records: list[Record], folds: list[int] | None, source: str
) -> list[Record]:
    """Keep the records of ``folds`` (all when None); a fold that selects nothing is an error."""
    if folds is None:
        return list(records)
    wanted = {int(f) for f in folds}
    present = folds_of(records)
    unknown = sorted(wanted - set(present))
    if unknown:
        raise ValueError(
            f"{source}: folds {unknown} do not exist; available folds are {present}"
        )
    return [records[i] for i in indices_in_folds(records, wanted)]


def leave_one_fold_out(folds: list[int]) -> list[tuple[list[int], list[int]]]:
    """The k-fold protocol (ESC-50: 5 folds): ``[(train_folds, [test_fold]), ...]``, one per fold."""
    ordered = sorted(set(folds))
    if len(ordered) < 2:
        raise ValueError(f"k-fold evaluation needs at least two folds, got {ordered}")
    return [([f for f in ordered if f != test], [test]) for test in ordered]


__all__ = [
    "Record",
    "SignalDataset",
    "filter_folds",
    "folds_of",
    "indices_in_folds",
    "leave_one_fold_out",
]
