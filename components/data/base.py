"""The data set interface: labelled records with folds, and a signal per index.

Every data set is a list of ``Record`` s (what a sample is, its label and fold) and a way to
turn record ``i`` into a float32 signal: ``[N]`` for audio, ``[2, L]`` for IQ. Recipes split
data by folds only, so every record carries a fold >= 1.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Iterable, Literal

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


SplitKind = Literal["folds", "random", "stratified"]


def check_split_settings(
    source: str,
    split: str,
    num_folds: int,
    holdout_fraction: float | None,
    group_pattern: str | None,
) -> re.Pattern[str] | None:
    """Reject split settings that cannot work, naming them; the compiled ``group_pattern``."""
    if split not in ("folds", "random", "stratified"):
        raise ValueError(
            f"{source}: split must be folds, random or stratified, got {split!r}"
        )
    if num_folds < 1:
        raise ValueError(f"{source}: num_folds must be at least 1, got {num_folds}")
    if holdout_fraction is not None and not 0.0 < holdout_fraction < 1.0:
        raise ValueError(
            f"{source}: holdout_fraction must lie strictly between 0 and 1, got {holdout_fraction}"
        )
    if group_pattern is None:
        return None
    try:
        return re.compile(group_pattern)
    except re.error as error:
        raise ValueError(
            f"{source}: group_pattern {group_pattern!r} is not a regular expression ({error})"
        ) from None


def group_of(record: Record, pattern: re.Pattern[str]) -> str:
    """The group of a file record: ``pattern``'s first group (or whole match) in its file name."""
    name = os.path.basename(record.key)
    match = pattern.search(name)
    if match is None:
        raise ValueError(
            f"group_pattern {pattern.pattern!r} does not match the file name {name!r} ({record.key});"
            " every file needs a group (e.g. '^([^_]+)_' for a speaker prefix before '_')"
        )
    return match.group(1) if pattern.groups else match.group(0)


def split_records(
    records: Sequence[Record],
    split: SplitKind,
    *,
    num_folds: int,
    seed: int = 0,
    holdout_fraction: float | None = None,
    group_pattern: re.Pattern[str] | None = None,
) -> list[Record]:
    """``records`` with new folds: the protocol that ``split`` names.

    ``folds`` keeps the data set's own folds (ESC-50's, a CSV's, a folder's deterministic
    round-robin), or with ``group_pattern`` deals whole groups to folds deterministically.
    ``random`` deals a seeded shuffle into ``num_folds`` folds of equal size; ``stratified``
    does so per class, so every fold has the data set's class proportions. With
    ``holdout_fraction`` there are two folds instead: fold 1 to train on and fold 2, about
    that fraction of the data, held out. With ``group_pattern`` (a regex over file names, e.g.
    a speaker prefix) a group is dealt as a unit, so no group spans train and test.
    """
    if split == "folds" and group_pattern is None and holdout_fraction is None:
        return list(records)
    shares = (
        [1.0 - holdout_fraction, holdout_fraction]
        if holdout_fraction is not None
        else [1.0 / num_folds] * num_folds
    )
    units: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        key = group_of(record, group_pattern) if group_pattern else str(index)
        units.setdefault(key, []).append(index)
    if len(units) < len(shares):
        raise ValueError(
            f"{len(units)} {'groups' if group_pattern else 'items'} cannot fill {len(shares)} folds;"
            " lower num_folds or use a finer group_pattern"
        )
    order = sorted(units)
    if split != "folds":
        random.Random(seed).shuffle(order)
    order.sort(key=lambda key: -len(units[key]))  # stable: big groups first, then order
    class_totals = Counter(record.label for record in records)
    load = [0] * len(shares)
    class_load = [Counter() for _ in shares]
    fold_of_index: dict[int, int] = {}

    def cost(
        fold: int, members: list[int], counts: Counter[int]
    ) -> tuple[float, float]:
        overall = (load[fold] + len(members)) / (shares[fold] * len(records))
        if split != "stratified":
            return overall, 0.0
        worst = max(
            (class_load[fold][label] + n) / (shares[fold] * class_totals[label])
            for label, n in counts.items()
        )
        return worst, overall

    for position, key in enumerate(order):
        members = units[key]
        counts = Counter(records[i].label for i in members)
        candidates = range(len(shares))
        empty = [f for f in candidates if load[f] == 0]
        if empty and len(empty) >= len(order) - position:
            candidates = (
                empty  # the last units go where nothing is yet: no fold left empty
            )
        fold = min(candidates, key=lambda f: (*cost(f, members, counts), f))
        load[fold] += len(members)
        class_load[fold].update(counts)
        for i in members:
            fold_of_index[i] = fold + 1
    return [
        dataclasses.replace(record, fold=fold_of_index[i])
        for i, record in enumerate(records)
    ]


def leave_one_fold_out(folds: list[int]) -> list[tuple[list[int], list[int]]]:
    """The k-fold protocol (ESC-50: 5 folds): ``[(train_folds, [test_fold]), ...]``, one per fold."""
    ordered = sorted(set(folds))
    if len(ordered) < 2:
        raise ValueError(f"k-fold evaluation needs at least two folds, got {ordered}")
    return [([f for f in ordered if f != test], [test]) for test in ordered]


__all__ = [
    "Record",
    "SignalDataset",
    "SplitKind",
    "check_split_settings",
    "group_of",
    "split_records",
    "filter_folds",
    "folds_of",
    "indices_in_folds",
    "leave_one_fold_out",
]
