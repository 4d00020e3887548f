"""Guards against degenerate runs: numbers that look like results but mean nothing.

A model fed pure padding, an evaluation on two clips, or embeddings that are all the same
still print an accuracy. These checks say so, in one line naming the data set, the step and
the count, or stop the run (exit 2) where the number would be meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from components.distributed import all_reduce_sum
from components.errors import UsageError
from components.runtime import Stage

MIN_EVAL_ITEMS = 10  # an evaluation needs at least max(this, classes) items
FLAT_FEATURE_STD = 1e-4  # an item whose features vary less than this is constant
PADDED_SHARE_LIMIT = 0.5  # warn when more of the model's input is padding than audio
COLLAPSED_DIM_STD = 1e-4  # a dimension spread less than this (relative) carries nothing
COLLAPSED_SHARE_LIMIT = 0.5  # warn when at least this share of the dimensions collapsed


def describe_data(dataset: Any) -> str:
    """The data set's class and location, for warnings (``AudioFolder at data/words``)."""
    parent = getattr(dataset, "dataset", dataset)  # a fold subset names its parent
    root = getattr(parent, "root", None)
    name = type(parent).__name__
    return f"{name} at {root}" if root is not None else name


def check_eval_size(
    stage: Stage, what: str, count: int, num_classes: int, dataset: Any
) -> None:
    """An evaluation on nothing is an error; one on fewer than max(10, classes) items a warning."""
    if count == 0:
        raise UsageError(
            f"{stage.section}: {what} of {describe_data(dataset)} holds no items: there is nothing to "
            "evaluate; check --data-dir and the step's eval_folds"
        )
    needed = max(MIN_EVAL_ITEMS, num_classes)
    if count < needed:
        stage.warn(
            f"{what} of {describe_data(dataset)} holds {count} item{'s' if count != 1 else ''} "
            f"(fewer than {needed} for {num_classes} classes): its accuracy means little"
        )


class BatchGuard:
    """Watches a training stage's batches: constant features and padding share.

    ``observe`` keeps device-side counts (no host sync); ``report`` reads them at the log
    interval and warns once per stage for each kind of problem.
    """

    def __init__(self, stage: Stage, transform: Any, dataset: Any) -> None:
        self.stage, self.transform, self.dataset = stage, transform, dataset
        self.flat = torch.zeros((), dtype=torch.long, device=stage.run.device)
        self.items = 0
        self.padded_sum, self.padded_batches = 0.0, 0
        self.warned: set[str] = set()

    def observe(self, features: torch.Tensor, lengths: torch.Tensor | None) -> None:
        spread = features.detach().flatten(1).float().std(dim=1)
        self.flat += (spread < FLAT_FEATURE_STD).sum()
        self.items += features.shape[0]
        share = getattr(self.transform, "padded_share", None)
        if lengths is not None and share is not None:
            self.padded_sum += float(share(lengths))
            self.padded_batches += 1

    def report(self, step: int, section: str) -> None:
        """Every rank calls this at the same step: the counts are summed over ranks."""
        where = describe_data(self.dataset)
        counts = all_reduce_sum(
            torch.tensor(
                [
                    float(self.flat),
                    float(self.items),
                    self.padded_sum,
                    float(self.padded_batches),
                ]
            ),
            self.stage.run.dist,
        ).tolist()
        flat, items, padded_sum, padded_batches = counts
        if flat and "flat" not in self.warned:
            self.warned.add("flat")
            self.stage.warn(
                f"{section} step {step}: {int(flat)} of {int(items)} items of {where} had (near-)constant "
                "features (silence or pure padding): the model learns nothing from them"
            )
        if padded_batches and "padded" not in self.warned:
            share = padded_sum / padded_batches
            if share > PADDED_SHARE_LIMIT:
                self.warned.add("padded")
                self.stage.warn(
                    f"{section} step {step}: {share:.0%} of the model's input frames from {where} "
                    "are zero padding (clips shorter than the window); shorten the window "
                    "(--transform.target_frames, with --model.img_size) to fit the clips"
                )


@dataclass(frozen=True)
class EmbeddingSpread:
    """How much a data set's embeddings vary: per-dimension spread and distinct rows."""

    items: int
    dims: int
    mean_std: float
    collapsed_dims: int
    distinct: int

    @property
    def collapsed(self) -> bool:
        if self.items < 2 or self.dims == 0:
            return False
        return (
            self.distinct <= 1
            or self.collapsed_dims >= COLLAPSED_SHARE_LIMIT * self.dims
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "dims": self.dims,
            "mean_std": self.mean_std,
            "collapsed_dims": self.collapsed_dims,
            "distinct": self.distinct,
        }


def embedding_spread(embeddings: torch.Tensor) -> EmbeddingSpread:
    """Spread of ``[N, D]`` embeddings across the data set; a dimension whose std is below
    ``COLLAPSED_DIM_STD`` times the embeddings' overall scale counts as collapsed."""
    items, dims = embeddings.shape if embeddings.dim() == 2 else (0, 0)
    if items == 0 or dims == 0:
        return EmbeddingSpread(items, dims, 0.0, 0, items)
    x = embeddings.double()
    std = x.std(dim=0, unbiased=False)
    scale = float(x.abs().mean()) + 1e-12
    rounded = torch.round(x / (scale * 1e-6))
    return EmbeddingSpread(
        items=items,
        dims=dims,
        mean_std=float(std.mean()),
        collapsed_dims=int((std < COLLAPSED_DIM_STD * scale).sum()),
        distinct=int(torch.unique(rounded, dim=0).shape[0]),
    )


def check_embedding_spread(
    stage: Stage, spread: EmbeddingSpread | dict[str, Any], dataset: Any
) -> None:
    """Warn when embeddings collapsed; ``spread`` as measured or as an embedding file holds it."""
    if isinstance(spread, dict):
        spread = EmbeddingSpread(**spread)
    if spread.collapsed:
        stage.warn(
            f"the embeddings of {describe_data(dataset)} collapsed: {spread.distinct} distinct of "
            f"{spread.items}, {spread.collapsed_dims} of {spread.dims} dimensions without spread; "
            "probes and kNN on them are at chance (is the model's window pure padding?)"
        )


__all__ = [
    "BatchGuard",
    "EmbeddingSpread",
    "check_embedding_spread",
    "check_eval_size",
    "describe_data",
    "embedding_spread",
]
