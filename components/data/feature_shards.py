"""Tensor members of WebDataset shards: precomputed features (``feature_shards``) and IQ frames (``iq_shards``).

Both read ``<key>.pth`` (a tensor saved by ``torch.save``, loaded with ``weights_only=True``)
beside ``<key>.json`` / ``<key>.cls`` labels, through ``audio_shards``' member index: one
cached scan per shard, then reads by offset. ``feature_shards`` holds what the ``features``
step wrote: each clip's full-length ``[C, T, F]`` features of a transform, recorded in the
shards' ``manifest.json`` with its name and settings. It hands them out time-last,
``[C, F, T]``, so that the runtime's collate pads frames like samples and its ``lengths`` are
frame counts, and it adapts the spec's transform (``adapt_transform``) to run only what
comes after its features (the model's window, normalisation), after checking that the
transform is the one that made them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.data.audio_files import AudioFileChangedError
from components.data.audio_io import AudioFileError, DataFormatError
from components.data.base import Record, SignalDataset, filter_folds
from components.data.shards import AudioShards, expand_on_every_rank
from components.errors import UsageError
from components.registry import data_registry
from components.transforms.base import full_frames

TENSOR_EXTENSION = "pth"


def shard_manifests(shard_paths: list[str]) -> list[tuple[Path, dict[str, Any]]]:
    """The ``manifest.json`` beside each folder of shards (folders without one left out)."""
    found = []
    for folder in sorted({Path(path).parent for path in shard_paths}):
        path = folder / "manifest.json"
        if path.is_file():
            try:
                found.append((path, json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError) as error:
                raise DataFormatError(f"{path}: unreadable ({error})") from None
    return found


class TensorShards(AudioShards):
    """Labelled ``<key>.pth`` tensors from tar shards (the base of the two data sets below).

    Shares ``audio_shards``' index, member reads, open-file cache and shard-local epoch
    order; only the member kind and its decoding differ.
    """

    def __init__(
        self,
        shards: str,
        root: str | None,
        folds: list[int] | None,
        classes: list[str] | None,
        shuffle_buffer: int,
        skip_bad_files: bool,
        cache: bool,
        cache_dir: str | None,
    ) -> None:
        SignalDataset.__init__(self)
        if shuffle_buffer < 0:
            raise ValueError(
                f"{self.source_name}: shuffle_buffer must be >= 0, got {shuffle_buffer}"
            )
        self.root = Path(root or ".")
        self.sample_rate = None
        self.clip_samples = None
        self.cache = None
        self.skip_bad_files = skip_bad_files
        self.skipped_files: list[str] = []
        self.shuffle_buffer = shuffle_buffer
        labelled, problems = self.index_shards(
            shards,
            root,
            classes,
            cache,
            cache_dir,
            kind="tensors",
            probe=None,
            extensions=(TENSOR_EXTENSION,),
            missing=f".{TENSOR_EXTENSION} member",
        )
        records = [
            Record(key, label, self.class_names[label], tag.fold or 1)
            for key, tag, label in labelled
        ]
        self.report_problems(problems)
        if not records:
            raise FileNotFoundError(
                f"{self.source_name}: the {len(self.shard_paths)} shard(s) of {shards!r} hold no"
                f" labelled tensors (<key>.{TENSOR_EXTENSION} with <key>.json or <key>.cls)"
            )
        self.records = filter_folds(records, folds, shards)

    source_name = "tensor_shards"

    def read_tensor(self, index: int) -> torch.Tensor:
        """Record ``index``'s tensor (a changed or damaged member is a one-line error)."""
        try:
            name, _, data = self.read_member(index)
            value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise DataFormatError(f"{name}: not a floating-point tensor")
            return self.check_tensor(name, value)
        except (AudioFileError, OSError, RuntimeError, ValueError) as error:
            raise AudioFileChangedError(
                f"{self.records[index].key}: cannot be read ({' '.join(str(error).split())});"
                " rewrite the shard, or pass --data.skip_bad_files to skip such members"
            ) from None

    def check_tensor(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return value

    def load(self, index: int) -> torch.Tensor:
        return self.read_tensor(index).float()


@data_registry.register("iq_shards", version="1.0")
class IQShards(TensorShards):
    """IQ frames ``[2, L]`` from tar shards written by the ``shard`` step from an IQ data set.

    Args:
        shards: Shard files: a path, glob or brace pattern (shards/shard-{000000..000009}.tar).
        root: Folder that relative shard patterns are read under (--data-dir sets it).
        folds: Folds to keep (all when unset).
        classes: Class names in label order (default: from the .json categories).
        shuffle_buffer: Samples a seeded shuffle buffer mixes across a shard's neighbours each epoch.
        skip_bad_files: Leave out bad members (named in a warning, counted) instead of stopping.
        cache: Keep each shard's member index in the cache, so a later run does not rescan.
        cache_dir: Folder of that index cache (default: the user cache directory).
    """

    signal_kind = "iq"
    source_name = "iq_shards"

    def __init__(
        self,
        shards: str = "data/shards/*.tar",
        root: str | None = None,
        folds: list[int] | None = None,
        classes: list[str] | None = None,
        shuffle_buffer: int = 1000,
        skip_bad_files: bool = False,
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            shards,
            root,
            folds,
            classes,
            shuffle_buffer,
            skip_bad_files,
            cache,
            cache_dir,
        )

    def check_tensor(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if value.dim() != 2 or value.shape[0] != 2:
            raise DataFormatError(
                f"{name}: an IQ frame must be [2, L], got {list(value.shape)}"
            )
        return value


@data_registry.register("feature_shards", version="1.0")
class FeatureShards(TensorShards):
    """Precomputed features (the ``features`` step's shards): training skips the waveform front end.

    The spec keeps its ``transform:`` (same name and settings as the shards' manifest
    records; its window and normalisation settings may differ): the runtime checks it and
    runs only its part after the features. ``ds[i]`` is clip ``i``'s features time-last,
    ``[C, F, T]``, so a batch's ``lengths`` are frame counts.

    Args:
        shards: Shard files of the features step: a path, glob or brace pattern (features/features-{000000..000009}.tar).
        root: Folder that relative shard patterns are read under (--data-dir sets it).
        folds: Folds to keep (all when unset).
        classes: Class names in label order (default: from the manifest, else the .json categories).
        shuffle_buffer: Samples a seeded shuffle buffer mixes across a shard's neighbours each epoch.
        skip_bad_files: Leave out bad members (named in a warning, counted) instead of stopping.
        cache: Keep each shard's member index in the cache, so a later run does not rescan.
        cache_dir: Folder of that index cache (default: the user cache directory).
    """

    signal_kind = "features"  # time-last [C, F, T], not a waveform
    source_name = "feature_shards"
    holds_features = True

    def __init__(
        self,
        shards: str = "data/features/*.tar",
        root: str | None = None,
        folds: list[int] | None = None,
        classes: list[str] | None = None,
        shuffle_buffer: int = 1000,
        skip_bad_files: bool = False,
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        manifests = shard_manifests(
            expand_on_every_rank(shards, root, self.source_name, meets=cache)
        )
        made_by = [manifest.get("transform") for _, manifest in manifests]
        if not manifests or any(entry is None for entry in made_by):
            raise FileNotFoundError(
                f"feature_shards: {shards!r} has no manifest.json of a features step beside its"
                " shards (it records the transform that made them); write them with a"
                " `features` step, or read audio shards with audio_shards"
            )
        if any(entry != made_by[0] for entry in made_by):
            raise DataFormatError(
                f"feature_shards: the shards of {shards!r} were made by different transforms"
                f" ({', '.join(str(path) for path, _ in manifests)}); use one features run"
            )
        self.manifest_path, manifest = manifests[0]
        self.made_by: dict[str, Any] = made_by[0]
        if classes is None and manifest.get("class_names"):
            classes = list(manifest["class_names"])
        super().__init__(
            shards,
            root,
            folds,
            classes,
            shuffle_buffer,
            skip_bad_files,
            cache,
            cache_dir,
        )
        self.sample_rate = manifest.get("sample_rate")
        self.feature_shape = manifest.get("feature_shape")

    def check_tensor(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if value.dim() != 3:
            raise DataFormatError(
                f"{name}: features must be [C, T, F], got {list(value.shape)}"
            )
        return value

    def load(self, index: int) -> torch.Tensor:
        return self.read_tensor(index).float().transpose(-1, -2)

    def adapt_transform(
        self, transform: nn.Module, settings: Mapping[str, Any]
    ) -> nn.Module:
        """The spec's ``transform`` (built from ``settings``) after its features, once
        checked to be the one that made these features (else a ``UsageError``)."""
        check_feature_transform(
            self.made_by, transform, settings, str(self.manifest_path)
        )
        channels, _, bins = self.feature_shape
        return PrecomputedFeatures(transform, (int(channels), int(bins)))


_UNSET = object()


def check_feature_transform(
    made_by: Mapping[str, Any],
    transform: nn.Module,
    settings: Mapping[str, Any],
    where: str,
) -> None:
    """Features made by another transform, or by other settings of it than those that act
    before ``features()``, are refused naming each difference and the two fixes."""
    name = getattr(transform, "registered_name", None)
    if name is None or not hasattr(transform, "from_features"):
        raise UsageError(
            f"transform {type(transform).__name__} cannot run on precomputed features (it has no"
            " features() / from_features() split); use kaldi_fbank, log_mel or iq_spectrogram,"
            " or train from audio (audio_shards)"
        )
    recorded = dict(made_by.get("settings", {}))
    current = json.loads(json.dumps(dict(settings)))
    free = set(getattr(transform, "post_feature_settings", ()))
    differences = []
    if made_by.get("name") != name:
        differences.append(
            f"transform: {made_by.get('name')!r} (features) vs {name!r} (spec)"
        )
    for key in sorted((set(recorded) | set(current)) - free):
        then, now = recorded.get(key, _UNSET), current.get(key, _UNSET)
        if then != now:
            shown = ["(unset)" if v is _UNSET else repr(v) for v in (then, now)]
            differences.append(f"{key}: {shown[0]} (features) vs {shown[1]} (spec)")
    if differences:
        raise UsageError(
            f"the precomputed features ({where}) were made by another transform than the"
            f" spec's: {'; '.join(differences)}. Rewrite the features with this transform (a"
            f" `features` step), or set the transform to match (--transform.<setting>)"
        )


class PrecomputedFeatures(nn.Module):
    """A transform's part after its features, for batches of precomputed features.

    Takes time-last ``[B, C, F, T]`` batches (``lengths``: frames per clip) and runs the
    transform's ``from_features`` / ``windows_from_features``, so the model sees what the
    transform computes from audio.
    """

    def __init__(self, transform: nn.Module, channels_bins: tuple[int, int]) -> None:
        super().__init__()
        self.transform = transform
        self.channels_bins = channels_bins
        self.sample_rate = getattr(transform, "sample_rate", None)
        self.input_kind = getattr(transform, "input_kind", "audio")
        self.registered_name = getattr(transform, "registered_name", None)

    @staticmethod
    def unpack(
        batch: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = batch.transpose(-1, -2)  # [B, C, T, F]
        return features, full_frames(features) if lengths is None else lengths

    def forward(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.transform.from_features(*self.unpack(batch, lengths))

    def windows(
        self, batch: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform.windows_from_features(*self.unpack(batch, lengths))

    def padded_share(self, lengths: torch.Tensor) -> float:
        return self.transform.padded_share_of_frames(lengths)

    @torch.no_grad()
    def output_shape(self, num_frames: int) -> tuple[int, int, int]:
        """``(C, T, F)`` for a clip of ``num_frames`` frames (the transform run on zeros)."""
        was_training = self.training
        self.eval()
        try:
            channels, bins = self.channels_bins
            zeros = torch.zeros((1, channels, num_frames, bins))
            out = self.transform.from_features(zeros, torch.tensor([num_frames]))
        finally:
            self.train(was_training)
        return tuple(out.shape[1:])


__all__ = [
    "FeatureShards",
    "IQShards",
    "PrecomputedFeatures",
    "TensorShards",
    "check_feature_transform",
    "shard_manifests",
]
