"""Embeddings of a whole data set from a pre-trained encoder, cached by checkpoint and data.

The seed's three parts: ``CheckpointLoader`` builds the spec's model and loads an encoder
checkpoint into it (safely, checked to fit); ``EmbeddingGenerator`` runs the frozen encoder
over a data set (sharded over ranks under torchrun) and pools each clip to one vector;
``EmbeddingCache`` keeps the result on disk under a key made of the checkpoint's content hash,
the data set's identity and the pooling, so a second call is a file read and a new checkpoint
(or other data) misses the cache. The ``embed`` recipe saves embeddings with labels, folds and
file keys for use outside the script; ``linear_probe`` and ``knn`` reuse the same cache.
After saving, it reports per-class nearest-neighbour agreement and answers ``--embed.query``
(``components.recipes.similarity``), and exports to FiftyOne on request
(``components.recipes.fiftyone_export``), printing and writing on the main rank only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from components.run_checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    atomic_torch_save,
    file_sha256,
    load_model_weights,
)
from components.distributed import all_reduce_sum, barrier, wait_for_main
from components.errors import UsageError
from components.models.official_weights import (
    CheckpointMismatchError,
    load_official_checkpoint,
    read_official_checkpoint,
)
from components.metrics import write_json_atomic
from components.recipes.fiftyone_export import check_fiftyone_target, export_fiftyone
from components.recipes.guards import (
    check_embedding_spread,
    check_eval_size,
    describe_data,
    embedding_spread,
)
from components.recipes.hear import hear_module_name, write_hear_module
from components.recipes.similarity import (
    NeighbourAgreement,
    QueryTarget,
    describe_search,
    load_query_clip,
    nearest_neighbour_agreement,
    resolve_query,
    search_report,
)
from components.registry import recipe_registry
from components.runtime import (
    Handoff,
    Stage,
    StepResult,
    StopRequested,
    collate_signals,
    eval_loader,
)
from components.transforms.base import mean_by_owner

EMBEDDING_FORMAT = "sigmae-embeddings/2"  # 2: own-length clips, mean over windows


@dataclass
class CheckpointLoader:
    """Finds and loads the encoder checkpoint a recipe should start from."""

    stage: Stage

    def resolve(self, explicit: str | None) -> Path | None:
        """An explicit path wins; otherwise the checkpoint an earlier ``mae_pretrain`` step left."""
        if explicit:
            path = Path(explicit)
            if not path.is_file():
                raise UsageError(
                    f"checkpoint {path} does not exist (set by --{self.stage.section}.checkpoint)"
                )
            return path
        found = self.stage.inputs.encoder_checkpoint
        return Path(found) if found else None

    def load(self, path: Path, **model_overrides: Any) -> nn.Module:
        """The spec's model with the checkpoint's weights, on the run's device.

        A checkpoint of this script's runs is loaded as it is; any other state dict (an
        official AudioMAE / AudioMAE++ release, e.g. AudioSet pre-training, also as the official
        training code saves it, with its ``args``) goes through the catalog's converter, encoder
        weights only, and must fit exactly. Files are read with ``weights_only=True``.
        """
        try:
            payload = dict(read_official_checkpoint(path))
        except (CheckpointMismatchError, FileNotFoundError) as error:
            raise CheckpointError(str(error)) from None
        model = self.stage.components.model(**model_overrides)
        if payload.get("format") == CHECKPOINT_FORMAT:
            load_model_weights(model, payload, path)
            return model
        try:
            report = load_official_checkpoint(
                model, payload, strict=True, decoder=False
            )
        except (CheckpointMismatchError, KeyError, ValueError) as error:
            raise CheckpointError(
                f"{path} is neither a checkpoint of this script nor an official one that fits the model: {error}"
            ) from None
        self.stage.info(f"loaded {path} ({report.layout} layout, encoder weights)")
        return model


def dataset_fingerprint(dataset: Any) -> str:
    """Identity of a data set's content listing: class, and every record's key, label and fold."""
    digest = hashlib.sha256(type(dataset).__name__.encode())
    for record in getattr(dataset, "records", []):
        digest.update(f"{record.key}\t{record.label}\t{record.fold}\n".encode())
    digest.update(str(len(dataset)).encode())
    return digest.hexdigest()


class EmbeddingGenerator:
    """Pooled encoder embeddings ``[N, D]`` of every item of a data set, in data set order."""

    def __init__(
        self,
        stage: Stage,
        model: nn.Module,
        transform: nn.Module,
        *,
        pooling: str = "mean",
        batch_size: int = 64,
        num_workers: int = 0,
    ):
        self.stage, self.model, self.transform = stage, model, transform
        self.pooling, self.batch_size, self.num_workers = (
            pooling,
            batch_size,
            num_workers,
        )

    @torch.no_grad()
    def embed_batch(self, signals: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` float32 embeddings (on the CPU) of a padded batch of clips."""
        self.model.eval()
        self.transform.eval()
        # A clip longer than the model's window is the mean of windows covering it.
        windows, owner = self.transform.windows(
            signals.to(self.stage.run.device), lengths
        )
        with self.stage.run.autocast():
            embedding = self.model.get_embedding(windows, pooling_mode=self.pooling)
        return mean_by_owner(embedding.float(), owner, signals.shape[0]).cpu()

    @torch.no_grad()
    def __call__(self, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        stage = self.stage
        self.model.eval()
        self.transform.eval()
        loader, indices = eval_loader(
            stage.run, dataset, self.batch_size, self.num_workers
        )
        chunks, labels = [], []
        for signals, batch_labels, lengths in loader:
            if (
                stage.stop.requested and not stage.run.dist.enabled
            ):  # (under DDP the ranks must stop together: finish)
                raise StopRequested(
                    f"{stage.section}: stopped by {stage.stop.signal_name} while embedding; nothing to save"
                )
            chunks.append(self.embed_batch(signals, lengths))
            labels.append(batch_labels)
        local = (
            indices,
            torch.cat(chunks) if chunks else torch.zeros(0, 0),
            torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        )
        parts = [local]
        if stage.run.dist.enabled:
            parts = [None] * stage.run.dist.world_size
            dist.all_gather_object(parts, local)
        dim = (
            max(part[1].shape[1] for part in parts if part[1].numel())
            if any(p[1].numel() for p in parts)
            else 0
        )
        embeddings = torch.zeros(len(dataset), dim)
        all_labels = torch.zeros(len(dataset), dtype=torch.long)
        for part_indices, part_embeddings, part_labels in parts:
            if part_indices:
                embeddings[part_indices] = part_embeddings
                all_labels[part_indices] = part_labels
        return embeddings, all_labels


@dataclass
class EmbeddingCache:
    """Embedding files in ``directory``, one per (checkpoint content, data set, pooling, transform)."""

    directory: Path
    enabled: bool = True

    @staticmethod
    def key(
        checkpoint_sha256: str,
        dataset: Any,
        pooling: str,
        transform_config: dict[str, Any],
    ) -> str:
        identity = {
            "checkpoint": checkpoint_sha256,
            "data": dataset_fingerprint(dataset),
            "pooling": pooling,
            "transform": transform_config,
        }
        return hashlib.sha256(
            json.dumps(identity, sort_keys=True, default=str).encode()
        ).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return Path(self.directory) / f"{key}.pt"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache file is recomputed, never trusted
            return None
        return (
            payload
            if isinstance(payload, dict) and payload.get("format") == EMBEDDING_FORMAT
            else None
        )

    def put(self, key: str, payload: dict[str, Any]) -> Path | None:
        if not self.enabled:
            return None
        path = self.path(key)
        atomic_torch_save({"format": EMBEDDING_FORMAT, **payload}, path)
        return path


def compute_or_load_embeddings(
    stage: Stage,
    *,
    checkpoint: str | None,
    pooling: str,
    batch_size: int,
    num_workers: int,
    cache_dir: str | None,
) -> tuple[dict[str, Any], bool]:
    """Embeddings of the whole data set (all folds) and whether they came from the cache."""
    loader = CheckpointLoader(stage)
    path = loader.resolve(checkpoint)
    if path is None:
        raise UsageError(
            f"{stage.section}: no encoder checkpoint: add a mae_pretrain step before it, or pass --{stage.section}.checkpoint PATH"
        )
    dataset = stage.components.dataset()
    checkpoint_hash = file_sha256(path)
    cache = EmbeddingCache(
        Path(cache_dir) if cache_dir else stage.run.out_dir / "embedding_cache",
        enabled=stage.run.is_main,
    )
    key = cache.key(
        checkpoint_hash, dataset, pooling, stage.components.settings("transform")
    )
    cached = cache.get(key)
    # Every rank must take the same branch: the miss path has collectives.
    all_hit = (
        all_reduce_sum(
            torch.tensor([0.0 if cached is not None else 1.0]), stage.run.dist
        ).item()
        == 0
    )
    if cached is not None and all_hit:
        stage.info(f"embedding cache hit: {cache.path(key)}")
        check_embedding_spread(stage, cached["spread"], dataset)
        return cached, True
    model = loader.load(path)
    transform = stage.components.transform()
    stage.components.check_fit(model, transform)
    embeddings, labels = EmbeddingGenerator(
        stage,
        model,
        transform,
        pooling=pooling,
        batch_size=batch_size,
        num_workers=num_workers,
    )(dataset)
    payload = {
        "embeddings": embeddings,
        "labels": labels,
        "folds": torch.tensor(
            [record.fold for record in dataset.records], dtype=torch.long
        ),
        "keys": [record.key for record in dataset.records],
        "paths": [
            record.key for record in dataset.records
        ],  # file path, or "index:<i>"
        "class_names": list(dataset.class_names),
        "checkpoint": str(path),
        "checkpoint_sha256": checkpoint_hash,
        "pooling": pooling,
        "spread": embedding_spread(embeddings).as_dict(),
    }
    cache.put(key, payload)
    barrier(stage.run.dist)
    stage.info(
        f"embedded {len(dataset)} items with {path.name} ({embeddings.shape[1]}-d, {pooling} pooling)"
    )
    check_embedding_spread(stage, payload["spread"], dataset)
    return payload, False


def report_agreement(stage: Stage, payload: dict[str, Any]) -> NeighbourAgreement:
    """Per-class nearest-neighbour agreement of the embeddings, printed in one line."""
    agreement = nearest_neighbour_agreement(
        payload["embeddings"], payload["labels"], payload["class_names"]
    )
    dataset = stage.components.dataset()
    if agreement.overall is None:
        stage.warn(
            f"{describe_data(dataset)} holds {agreement.items} item(s): no nearest-neighbour agreement"
        )
    else:
        check_eval_size(
            stage,
            "nearest-neighbour agreement",
            agreement.items,
            len(payload["class_names"]),
            dataset,
        )
    stage.info(agreement.describe())
    return agreement


def search_similar(
    stage: Stage,
    payload: dict[str, Any],
    target: QueryTarget,
    clip: torch.Tensor | None,
    k: int,
    output: Path,
) -> dict[str, Any]:
    """Print the ``k`` clips most similar to the query and write them to ``output`` (JSON).

    A query outside the data set (``clip``) is embedded as the data set's clips were: the same
    checkpoint, transform and pooling.
    """
    if clip is None:
        query_embedding = payload["embeddings"][target.index]
    else:
        model = CheckpointLoader(stage).load(Path(payload["checkpoint"]))
        transform = stage.components.transform()
        generator = EmbeddingGenerator(
            stage, model, transform, pooling=payload["pooling"]
        )
        signals, _, lengths = collate_signals([(clip, 0)])
        query_embedding = generator.embed_batch(signals, lengths)[0]
    report = search_report(payload, target, query_embedding, k)
    for line in describe_search(report):
        stage.info(line)
    write_json_atomic(report, output)
    stage.info(f"similar clips: {output}")
    return report


@recipe_registry.register("embed", version="1.0")
def embed(
    stage: Stage,
    /,
    *,
    checkpoint: str | None = None,
    pooling: Literal["mean", "cls", "max"] = "mean",
    batch_size: int = 64,
    num_workers: int = 4,
    cache_dir: str | None = None,
    hear_module: bool = False,
    query: str | None = None,
    query_k: int = 10,
    fiftyone: str | None = None,
    fiftyone_persistent: bool = False,
) -> StepResult:
    """Save the embeddings of every item (with labels, folds and keys) to ``<out>/<step>/embeddings.pt``.

    ``checkpoint`` defaults to the encoder of an earlier ``mae_pretrain`` step; results are
    cached by checkpoint content and data set (``cache_dir``, default ``<out>/embedding_cache``).
    ``hear_module`` also writes ``<out>/<step>/hear_<spec>.py``, a standalone HEAR 2021 API
    module (standard library + torch) serving this encoder; its ``load_model`` takes the
    checkpoint (see ``components.recipes.hear``).

    The summary reports per-class nearest-neighbour agreement (cosine; see
    ``components.recipes.similarity``). ``query`` prints the ``query_k`` clips most similar
    to one clip and writes them to ``<out>/<step>/similar.json``; ``fiftyone`` exports the
    clips to a FiftyOne dataset (needs ``pip install fiftyone``; see
    ``components.recipes.fiftyone_export``).

    Args:
        checkpoint: Encoder checkpoint to embed with (this script's or an official
            file); None takes the encoder of an earlier mae_pretrain step
            (with neither, the step stops and says so).
        pooling: How the encoder's tokens become one embedding: mean or max over the
            patch tokens, or the CLS token.
        batch_size: Clips per batch while computing the embeddings.
        num_workers: Data-loader worker processes for computing the embeddings.
        cache_dir: Folder of the embedding cache (keyed by checkpoint content and data
            set); None uses <out>/embedding_cache.
        hear_module: Also write <out>/<step>/hear_<spec>.py, a standalone HEAR 2021 API
            module serving this encoder (its load_model takes the checkpoint).
        query: A clip to search from: its index in the data set, or a file path (a file outside the data set is embedded on the fly).
        query_k: How many of the most similar clips the query prints (the query itself excluded).
        fiftyone: Name of a FiftyOne dataset to export the clips to (spectrogram images, labels, embeddings, similarity index); off when unset.
        fiftyone_persistent: Keep the FiftyOne dataset in FiftyOne's database after the run (else it lasts the session).
    """
    if batch_size < 1 or num_workers < 0:
        raise UsageError(
            f"--{stage.section}.batch_size must be >= 1 and --{stage.section}.num_workers >= 0"
        )
    if query_k < 1:
        raise UsageError(f"--{stage.section}.query_k must be >= 1, got {query_k}")
    target = clip = None
    if query is not None:  # a bad query fails before anything is computed
        dataset = stage.components.dataset()
        flag = f"--{stage.section}.query"
        target = resolve_query(query, [r.key for r in dataset.records], flag)
        if target.index is None:
            clip = load_query_clip(dataset, target, flag)
    if (
        fiftyone is not None
    ):  # so is a missing package or a name taken by another dataset
        check_fiftyone_target(stage.run, fiftyone, f"--{stage.section}.fiftyone")
    payload, hit = compute_or_load_embeddings(
        stage,
        checkpoint=checkpoint,
        pooling=pooling,
        batch_size=batch_size,
        num_workers=num_workers,
        cache_dir=cache_dir,
    )
    output = stage.stage_dir / "embeddings.pt"
    if stage.run.is_main:
        atomic_torch_save(payload, output)
        stage.plots.embedding_projection(
            payload["embeddings"],
            payload["labels"],
            payload["class_names"],
            f"{stage.section}_pca.png",
        )
    hear_path = stage.stage_dir / f"{hear_module_name(stage.run.name)}.py"
    if hear_module and stage.run.is_main:
        write_hear_module(
            hear_path,
            weights=payload["checkpoint"],
            model_class=stage.components.pipeline.model,
            model_config=stage.components.settings("model"),
            transform_class=stage.components.pipeline.transform,
            transform_config=stage.components.settings("transform"),
        )
        stage.info(f"HEAR module {hear_path} (weights: {payload['checkpoint']})")
    agreement = report_agreement(stage, payload)
    similar_path = stage.stage_dir / "similar.json"
    if target is not None and stage.run.is_main:
        search_similar(stage, payload, target, clip, query_k, similar_path)
    exported = None
    if fiftyone is not None and stage.run.is_main:
        exported = export_fiftyone(
            stage,
            payload,
            name=fiftyone,
            persistent=fiftyone_persistent,
            cache_dir=(
                Path(cache_dir) if cache_dir else stage.run.out_dir / "embedding_cache"
            ),
        )
    # Rank 0 alone saved, plotted, searched and exported (an export can take hours): the
    # other ranks wait for it here, not at the pipeline's next collective and its timeout.
    wait_for_main(stage.run.dist, f"{stage.section}'s saving, query and export")
    summary = {
        "hear_module": str(hear_path) if hear_module else None,
        "similar": str(similar_path) if target is not None else None,
        "fiftyone": exported,
        # per class, the share of items whose nearest other item (cosine) has its class
        "nn_agreement": agreement.as_dict(),
        "embeddings": str(output),
        "num_items": int(payload["embeddings"].shape[0]),
        "dim": int(payload["embeddings"].shape[1]),
        "pooling": pooling,
        "checkpoint": payload["checkpoint"],
        "cache_hit": hit,
        # how much the embeddings vary over the data set (collapsed: all alike, see guards)
        "spread": payload["spread"],
    }
    return StepResult(summary, Handoff(embeddings=str(output)))
