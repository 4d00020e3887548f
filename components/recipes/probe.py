"""Frozen-encoder evaluations on cached embeddings: a linear probe and a weighted k-NN.

Both start from ``compute_or_load_embeddings`` (shared with ``embed``): the encoder runs once
per checkpoint and data set, then the probes train and vote on ``[N, D]`` tensors in
seconds. The linear probe follows MAE's protocol (BatchNorm without affine parameters, then
a linear layer); the k-NN classifier is DINO's (cosine similarity, top-k neighbours voting
with weights ``exp(sim / temperature)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from components.errors import UsageError
from components.losses import soft_target_cross_entropy
from components.metrics import confusion_matrix
from components.recipes.embed import compute_or_load_embeddings
from components.recipes.engine import check_ranges, set_learning_rate, warmup_cosine_lr
from components.recipes.finetune import resolve_split
from components.recipes.guards import check_eval_size
from components.registry import recipe_registry
from components.runtime import Stage, StepResult


def fold_mask(folds: torch.Tensor, chosen: list[int]) -> torch.Tensor:
    return torch.isin(folds, torch.tensor(chosen, dtype=folds.dtype))


def knn_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    query_x: torch.Tensor,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores ``[Q, K]`` of a cosine k-NN vote weighted by ``exp(sim / temperature)``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    bank = F.normalize(train_x.float(), dim=-1)
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, query_x.shape[0], chunk):
        query = F.normalize(query_x[start : start + chunk].float(), dim=-1)
        similarity, index = (query @ bank.t()).topk(k, dim=-1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(query.shape[0], num_classes)
        votes.scatter_add_(1, train_y[index].long(), weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)


@dataclass
class ProbeData:
    """Cached embeddings split by folds, as both probes consume them."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    train_folds: list[int]
    eval_folds: list[int]
    num_classes: int
    cache_hit: bool


def load_probe_data(
    stage: Stage,
    *,
    checkpoint: str | None,
    pooling: str,
    train_folds: list[int] | None,
    eval_folds: list[int] | None,
    batch_size: int,
    num_workers: int,
    cache_dir: str | None,
) -> ProbeData:
    """Resolve the fold split, embed the data set (or load the cache) and split the embeddings."""
    train_folds, eval_folds = resolve_split(
        stage, stage.components.dataset(), train_folds, eval_folds
    )
    payload, hit = compute_or_load_embeddings(
        stage,
        checkpoint=checkpoint,
        pooling=pooling,
        batch_size=batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
    )
    folds = payload["folds"]
    train, held_out = fold_mask(folds, train_folds), fold_mask(folds, eval_folds)
    num_classes = len(payload["class_names"])
    check_eval_size(
        stage,
        f"evaluation folds {eval_folds}",
        int(held_out.sum()),
        num_classes,
        stage.components.dataset(),
    )
    x, y = payload["embeddings"], payload["labels"]
    return ProbeData(
        train_x=x[train],
        train_y=y[train],
        eval_x=x[held_out],
        eval_y=y[held_out],
        train_folds=train_folds,
        eval_folds=eval_folds,
        num_classes=num_classes,
        cache_hit=hit,
    )


def _report(
    stage: Stage, scores: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    predictions = scores.argmax(dim=-1)
    matrix = confusion_matrix(predictions, labels, num_classes)
    if stage.run.is_main:
        stage.plots.confusion(
            matrix,
            list(stage.components.dataset().class_names),
            f"{stage.section}_confusion.png",
        )
    return {
        "accuracy": (
            float((predictions == labels).float().mean())
            if labels.numel()
            else float("nan")
        ),
        "eval_items": int(labels.numel()),
        "confusion_matrix": matrix.tolist(),
    }


@recipe_registry.register("knn", version="1.0")
def knn(
    stage: Stage,
    /,
    *,
    k: int = 20,
    temperature: float = 0.07,
    checkpoint: str | None = None,
    pooling: Literal["mean", "cls", "max"] = "mean",
    train_folds: list[int] | None = None,
    eval_folds: list[int] | None = None,
    batch_size: int = 64,
    num_workers: int = 4,
    cache_dir: str | None = None,
) -> StepResult:
    """Weighted k-NN accuracy of frozen embeddings (evaluation folds default to the last fold).

    Args:
        k: Number of nearest training embeddings (by cosine similarity) that vote for
            each evaluation clip.
        temperature: Temperature of the votes' weights exp(similarity / temperature);
            lower trusts the nearest neighbours more.
        checkpoint: Encoder checkpoint to embed with (this script's or an official
            file); None takes the encoder of an earlier mae_pretrain step
            (with neither, the step stops and says so).
        pooling: How the encoder's tokens become one embedding: mean or max over the
            patch tokens, or the CLS token.
        train_folds: Folds the probe learns from; None takes every fold not evaluated.
        eval_folds: Folds it is scored on; None takes the last fold.
        batch_size: Clips per batch while computing embeddings.
        num_workers: Data-loader worker processes for computing the embeddings.
        cache_dir: Folder of the embedding cache (keyed by checkpoint content and data
            set); None uses <out>/embedding_cache.
    """
    check_ranges(
        stage,
        {
            "k": (k, k >= 1),
            "temperature": (temperature, temperature > 0),
            "batch_size": (batch_size, batch_size >= 1),
        },
    )
    data = load_probe_data(
        stage,
        checkpoint=checkpoint,
        pooling=pooling,
        train_folds=train_folds,
        eval_folds=eval_folds,
        batch_size=batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
    )
    scores = knn_predict(
        data.train_x,
        data.train_y,
        data.eval_x,
        data.num_classes,
        k=k,
        temperature=temperature,
    )
    summary = _report(stage, scores, data.eval_y, data.num_classes)
    stage.info(f"{k}-NN accuracy {summary['accuracy']:.4f} on folds {data.eval_folds}")
    return StepResult(
        {
            **summary,
            "k": k,
            "train_folds": data.train_folds,
            "eval_folds": data.eval_folds,
            "cache_hit": data.cache_hit,
        }
    )


class LinearProbe(nn.Module):
    """BatchNorm without affine parameters, then a linear layer (MAE's linear-probing head)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x))


@recipe_registry.register("linear_probe", version="1.0")
def linear_probe(
    stage: Stage,
    /,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    warmup_epochs: float = 10.0,
    label_smoothing: float = 0.0,
    checkpoint: str | None = None,
    pooling: Literal["mean", "cls", "max"] = "mean",
    train_folds: list[int] | None = None,
    eval_folds: list[int] | None = None,
    embed_batch_size: int = 64,
    num_workers: int = 4,
    cache_dir: str | None = None,
) -> StepResult:
    """Train a linear classifier on frozen embeddings (SGD with momentum, warm-up + cosine).

    Runs identically on every rank (it is cheap), so all ranks agree. An evaluation: it
    always runs whole (``--steps`` caps training stages only).

    Args:
        epochs: Passes of the linear classifier over the training embeddings.
        batch_size: Embeddings per SGD step of the linear classifier.
        lr: Peak learning rate of SGD with momentum (warm-up, then cosine decay).
        weight_decay: Weight decay of the linear classifier.
        warmup_epochs: Epochs of linear warm-up before the cosine decay.
        label_smoothing: Label smoothing of the cross-entropy (0 = hard targets).
        checkpoint: Encoder checkpoint to embed with (this script's or an official
            file); None takes the encoder of an earlier mae_pretrain step
            (with neither, the step stops and says so).
        pooling: How the encoder's tokens become one embedding: mean or max over the
            patch tokens, or the CLS token.
        train_folds: Folds the probe learns from; None takes every fold not evaluated.
        eval_folds: Folds it is scored on; None takes the last fold.
        embed_batch_size: Clips per batch while computing the embeddings.
        num_workers: Data-loader worker processes for computing the embeddings.
        cache_dir: Folder of the embedding cache (keyed by checkpoint content and data
            set); None uses <out>/embedding_cache.
    """
    check_ranges(
        stage,
        {
            "epochs": (epochs, epochs >= 1),
            "batch_size": (batch_size, batch_size >= 1),
            "lr": (lr, lr > 0),
            "weight_decay": (weight_decay, weight_decay >= 0),
            "warmup_epochs": (warmup_epochs, warmup_epochs >= 0),
            "label_smoothing": (label_smoothing, 0 <= label_smoothing < 1),
            "embed_batch_size": (embed_batch_size, embed_batch_size >= 1),
        },
    )
    data = load_probe_data(
        stage,
        checkpoint=checkpoint,
        pooling=pooling,
        train_folds=train_folds,
        eval_folds=eval_folds,
        batch_size=embed_batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
    )
    train_x, train_y, num_classes = data.train_x, data.train_y, data.num_classes
    if train_x.shape[0] < 2:
        raise UsageError(
            f"{stage.section}: needs at least 2 training items, got {train_x.shape[0]}"
        )
    # Its own seed, shared by all ranks: the probe must not depend on the rank, nor on whether
    # the embeddings came from the cache or from building (and so drawing for) an encoder.
    generator = torch.Generator().manual_seed(stage.data_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stage.data_seed)
        probe = LinearProbe(train_x.shape[1], num_classes)
    optimizer = torch.optim.SGD(
        probe.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay
    )
    batch = min(batch_size, train_x.shape[0])
    steps_per_epoch = max(1, train_x.shape[0] // batch)
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    probe.train()
    step, loss_value = 0, float("nan")
    while step < total:  # an evaluation: --steps caps training stages only
        order = torch.randperm(train_x.shape[0], generator=generator)
        for start in range(0, steps_per_epoch * batch, batch):
            if step >= total:
                break
            index = order[start : start + batch]
            set_learning_rate(
                optimizer,
                warmup_cosine_lr(
                    step, base_lr=lr, min_lr=0.0, warmup_steps=warmup, total_steps=total
                ),
            )
            loss = soft_target_cross_entropy(
                probe(train_x[index]), train_y[index], label_smoothing=label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_value = float(loss.detach())
    probe.eval()
    with torch.no_grad():
        scores = (
            probe(data.eval_x) if data.eval_x.shape[0] else torch.zeros(0, num_classes)
        )
    summary = _report(stage, scores, data.eval_y, num_classes)
    stage.metrics.log(
        stage.section,
        step,
        {"loss": loss_value, "accuracy": summary["accuracy"]},
        kind="eval",
    )
    stage.info(
        f"linear probe accuracy {summary['accuracy']:.4f} on folds {data.eval_folds} after {step} step{'' if step == 1 else 's'}"
    )
    return StepResult(
        {
            **summary,
            "steps": step,
            "total_steps": total,
            "final_loss": loss_value,
            "train_folds": data.train_folds,
            "eval_folds": data.eval_folds,
            "cache_hit": data.cache_hit,
        }
    )
