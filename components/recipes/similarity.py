"""Similarity search over a data set's embeddings: the clips nearest a query, and how often
an item's nearest neighbour shares its class.

Cosine similarity throughout, computed in blocks so a large data set never needs its whole
``N x N`` matrix at once. ``nearest_neighbour_agreement`` is the share of items whose nearest
*other* item has the same label (per class and overall): a quick, training-free reading of
how well the embeddings separate the classes. ``resolve_query`` turns ``--embed.query`` (an
index into the data set, or a path) into the item to search from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from components.data.audio_io import AudioFileError, load_audio
from components.errors import UsageError

SIMILARITY_BLOCK = 1024  # rows of the similarity matrix computed at once (at most)
SIMILARITY_BLOCK_VALUES = 2**26  # and at most this many similarities (256 MB) at once
# Nearest-neighbour agreement is O(N^2): beyond this many items it is measured on a seeded
# sample of them (neighbours searched within the sample), which says as much and stays cheap.
AGREEMENT_MAX_ITEMS = 20_000


@dataclass(frozen=True)
class Neighbour:
    """One search result: the item's index, its cosine similarity, label and path."""

    index: int
    similarity: float
    label: str
    path: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "similarity": self.similarity,
            "label": self.label,
            "path": self.path,
        }


@dataclass(frozen=True)
class NeighbourAgreement:
    """Per class, the share of its items whose nearest other item has the same class."""

    items: int
    overall: float | None
    per_class: dict[str, float]
    counts: dict[str, int]
    sampled_from: int | None = (
        None  # the data set's item count when ``items`` is a sample
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "sampled_from": self.sampled_from,
            "overall": self.overall,
            "per_class": dict(self.per_class),
            "counts": dict(self.counts),
        }

    def describe(self) -> str:
        """One line: the overall share, then each class's."""
        if self.overall is None:
            return f"nearest-neighbour class agreement: not defined for {self.items} item(s)"
        classes = ", ".join(
            f"{name} {share:.2f}" for name, share in self.per_class.items()
        )
        return (
            f"nearest-neighbour class agreement (cosine) over {self.items} items"
            + (
                f" (a seeded sample of {self.sampled_from})"
                if self.sampled_from is not None
                else ""
            )
            + ": "
            f"{self.overall:.3f} overall; {classes}"
        )


def unit_rows(embeddings: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (float32; a zero row stays zero)."""
    return F.normalize(embeddings.float(), dim=1)


def nearest_other(embeddings: torch.Tensor) -> torch.Tensor:
    """``[N]``: for each row, the index of the most cosine-similar *other* row (ties: lowest)."""
    unit = unit_rows(embeddings)
    count = unit.shape[0]
    nearest = torch.empty(count, dtype=torch.long)
    rows_at_once = max(
        1, min(SIMILARITY_BLOCK, SIMILARITY_BLOCK_VALUES // max(1, count))
    )
    for start in range(0, count, rows_at_once):
        block = unit[start : start + rows_at_once] @ unit.t()
        rows = torch.arange(block.shape[0])
        block[rows, rows + start] = float("-inf")  # never one's own nearest neighbour
        nearest[start : start + block.shape[0]] = block.argmax(dim=1)
    return nearest


def nearest_neighbour_agreement(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    max_items: int = AGREEMENT_MAX_ITEMS,
) -> NeighbourAgreement:
    """How often an item's nearest other item (cosine) has its class, per class and overall.

    Classes without items are left out; fewer than two items leave it undefined (``None``).
    """
    count = int(embeddings.shape[0])
    if count < 2:
        return NeighbourAgreement(count, None, {}, {})
    sampled_from = None
    if count > max_items:
        chosen = torch.randperm(count, generator=torch.Generator().manual_seed(0))
        chosen = chosen[:max_items].sort().values
        embeddings, labels, sampled_from, count = (
            embeddings[chosen],
            labels[chosen],
            count,
            max_items,
        )
    labels = labels.long().cpu()
    same = labels[nearest_other(embeddings)] == labels
    per_class, counts = {}, {}
    for label in sorted(set(labels.tolist())):
        chosen = labels == label
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        counts[name] = int(chosen.sum())
        per_class[name] = float(same[chosen].float().mean())
    return NeighbourAgreement(
        count, float(same.float().mean()), per_class, counts, sampled_from
    )


def most_similar(
    embeddings: torch.Tensor, query: torch.Tensor, k: int, exclude: int | None = None
) -> list[tuple[int, float]]:
    """The ``k`` rows most cosine-similar to ``query [D]``, best first, without row ``exclude``."""
    similarity = unit_rows(embeddings) @ unit_rows(query.reshape(1, -1)).squeeze(0)
    if exclude is not None:
        similarity[exclude] = float("-inf")
    available = similarity.shape[0] - (exclude is not None)
    values, indices = similarity.topk(max(0, min(k, available)))
    return [(int(i), float(v)) for i, v in zip(indices, values)]


@dataclass(frozen=True)
class QueryTarget:
    """What ``--<step>.query`` names: an item of the data set (``index``), or a file outside it."""

    text: str
    index: int | None
    path: str | None


def resolve_query(query: str, keys: list[str], flag: str) -> QueryTarget:
    """``query`` as an integer index into ``keys`` or as a path; a path not among them must exist.

    ``keys`` are the data set's record keys (file paths, or ``index:<i>`` without files);
    paths are compared after resolving, so ``./a.wav`` and its absolute path are the same clip.
    """
    text = str(query).strip()
    try:
        index = int(text)
    except ValueError:
        index = None
    if index is not None:
        if not 0 <= index < len(keys):
            raise UsageError(
                f"{flag} {text}: index out of range: the data set has {len(keys)} items "
                f"(0 to {len(keys) - 1}); pass an index in that range or a clip's path"
            )
        return QueryTarget(text, index, keys[index])
    wanted = Path(text).expanduser().resolve()
    for position, key in enumerate(keys):
        if not key.startswith("index:") and Path(key).expanduser().resolve() == wanted:
            return QueryTarget(text, position, key)
    if not wanted.is_file():
        raise UsageError(
            f"{flag} {text}: no such file, and not a clip of the data set; pass a clip's path "
            f"or an index from 0 to {len(keys) - 1}"
        )
    return QueryTarget(text, None, str(wanted))


def load_query_clip(dataset: Any, target: QueryTarget, flag: str) -> torch.Tensor:
    """A file outside the data set, read as the data set reads its clips (rate and cut)."""
    sample_rate = getattr(dataset, "sample_rate", None)
    if getattr(dataset, "signal_kind", None) != "audio" or not sample_rate:
        raise UsageError(
            f"{flag} {target.text}: {type(dataset).__name__} does not read audio files; "
            "pass a clip of the data set (its path or index) instead"
        )
    try:
        clip = load_audio(target.path, int(sample_rate), None)
    except (AudioFileError, OSError, ImportError) as error:
        raise UsageError(
            f"{flag} {target.text}: not an audio file {type(dataset).__name__} can read "
            f"({' '.join(str(error).split())}); pass a WAV file (or FLAC/OGG/MP3 with soundfile), or a clip's index"
        ) from None
    clip_samples = getattr(dataset, "clip_samples", None)
    return clip[..., :clip_samples] if clip_samples else clip


def search_report(
    payload: dict[str, Any],
    target: QueryTarget,
    query_embedding: torch.Tensor,
    k: int,
) -> dict[str, Any]:
    """The ``k`` clips most similar to the query, as ``similar.json`` holds them."""
    class_names = list(payload["class_names"])
    labels = payload["labels"].tolist()
    paths = list(payload["paths"])

    def label_of(index: int) -> str:
        label = int(labels[index])
        return class_names[label] if 0 <= label < len(class_names) else str(label)

    found = most_similar(payload["embeddings"], query_embedding, k, target.index)
    neighbours = [Neighbour(i, s, label_of(i), paths[i]) for i, s in found]
    return {
        "query": {
            "text": target.text,
            "index": target.index,
            "path": target.path,
            "label": None if target.index is None else label_of(target.index),
            "in_data_set": target.index is not None,
        },
        "k": k,
        "metric": "cosine",
        "neighbours": [neighbour.as_dict() for neighbour in neighbours],
    }


def describe_search(report: dict[str, Any]) -> list[str]:
    """Printed lines: a heading, then one line per neighbour (rank, similarity, label, path)."""
    query = report["query"]
    label = f" ({query['label']})" if query["label"] is not None else ""
    where = "" if query["in_data_set"] else ", not in the data set"
    lines = [
        f"{len(report['neighbours'])} clips most similar to {query['path']}{label}{where} (cosine):"
    ]
    for rank, neighbour in enumerate(report["neighbours"], 1):
        lines.append(
            f"  {rank:>3}. {neighbour['similarity']:+.4f}  {neighbour['label']}  {neighbour['path']}"
        )
    return lines


__all__ = [
    "Neighbour",
    "NeighbourAgreement",
    "QueryTarget",
    "describe_search",
    "load_query_clip",
    "most_similar",
    "nearest_neighbour_agreement",
    "nearest_other",
    "resolve_query",
    "search_report",
    "unit_rows",
]
