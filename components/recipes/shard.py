"""Writing a data set once into WebDataset tar shards: its clips (``shard``) or its features (``features``).

A corpus of millions of small files is slow to list and open, and every rank would open
every file. ``shard`` reads the spec's data set once (resampled to its ``sample_rate``, cut
as it cuts clips) and writes it as the tar layout the ``webdataset`` package reads and
writes: per item ``<key>.wav`` (mono 16-bit PCM) or, for IQ data, ``<key>.pth`` (the
``[2, L]`` float32 tensor, ``torch.save``), and ``<key>.json`` (label, category, fold, source
key). ``features`` writes the spec transform's full-length features (``<key>.pth``, a
``[C, T, F]`` tensor, see ``SignalTransform.features``), which ``feature_shards`` reads so
that training runs only the transform's window and normalisation (as AudioMAE++ trained on
precomputed fbanks). Beside the shards, ``manifest.json``: counts per class and fold,
duration, the source data set and its settings, and per shard its name, items, bytes and
sha256.

The bytes are deterministic (fixed tar mtime, owner and mode; sorted JSON), so the same
data give the same sha256. The folder is written under a temporary name and renamed when
complete; an existing folder is never overwritten (``overwrite`` moves it aside).
"""

from __future__ import annotations

import array
import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import tarfile
import tempfile
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from components.run_checkpoint import file_sha256
from components.distributed import all_reduce_sum
from components.errors import UsageError
from components.registry import recipe_registry
from components.runtime import (
    Stage,
    StepResult,
    StopRequested,
    move_aside,
    worker_leaves_signals_to_main,
)

SHARD_FORMAT = "sigmae-shards/1"
SHARD_SYNC_ITEMS = (
    256  # ranks meet this often while rank 0 writes (no collective waits long)
)
TAR_BLOCK = 512


def shard_key(index: int, source: str) -> str:
    """A WebDataset key for item ``index``: its position, then its source's name without dots
    (WebDataset splits a member name at the first dot of its basename)."""
    stem = Path(source.replace(":", "_")).stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:60]
    return f"{index:08d}" + (f"_{stem}" if stem else "")


def wav_bytes(waveform: torch.Tensor, sample_rate: int) -> bytes:
    """Mono 16-bit PCM WAV of a float waveform ``[N]`` in [-1, 1] (clipped; 16-bit samples
    read back as ``n / 32768`` are written back exactly)."""
    samples = (waveform.detach().double().cpu() * 32768.0).round().clamp(-32768, 32767)
    pcm = array.array("h", samples.to(torch.int16).tolist())
    if sys.byteorder == "big":  # WAV is little-endian
        pcm.byteswap()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(int(sample_rate))
        writer.writeframes(pcm.tobytes())
    return buffer.getvalue()


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """``torch.save`` of a contiguous CPU copy of ``tensor`` (deterministic bytes; read back
    with ``torch.load(..., weights_only=True)``)."""
    buffer = io.BytesIO()
    torch.save(tensor.detach().cpu().contiguous().clone(), buffer)
    return buffer.getvalue()


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def tar_member_size(size: int) -> int:
    """Bytes a member of ``size`` bytes takes in a tar file: header plus padded data."""
    return TAR_BLOCK + TAR_BLOCK * math.ceil(size / TAR_BLOCK)


@dataclass
class ShardInfo:
    file: str
    items: int = 0
    bytes: int = 0
    sha256: str = ""


@dataclass
class ShardWriter:
    """Tar shards ``<prefix>-000000.tar, ...`` in ``folder``, each of at most ``max_items``
    items and (but for an item bigger than it) ``max_bytes`` bytes."""

    folder: Path
    prefix: str
    max_items: int | None
    max_bytes: int | None
    shards: list[ShardInfo] = field(default_factory=list)
    _tar: tarfile.TarFile | None = None
    _size: int = 0

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """One item: ``{extension: bytes}`` as members ``<key>.<extension>``, in sorted order."""
        size = sum(tar_member_size(len(data)) for data in members.values())
        current = self.shards[-1] if self.shards else None
        full = current is not None and (
            (self.max_items is not None and current.items >= self.max_items)
            or (self.max_bytes is not None and self._size + size > self.max_bytes)
        )
        if self._tar is None or full:
            self._open_next()
        assert self._tar is not None
        for extension in sorted(members):
            data = members[extension]
            info = tarfile.TarInfo(f"{key}.{extension}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self._size += size
        self.shards[-1].items += 1

    def _open_next(self) -> None:
        self._close_current()
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._tar = tarfile.open(self.folder / name, "w", format=tarfile.USTAR_FORMAT)
        self.shards.append(ShardInfo(name))
        self._size = 0

    def _close_current(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._tar = None
        shard = self.shards[-1]
        path = self.folder / shard.file
        shard.bytes, shard.sha256 = path.stat().st_size, file_sha256(path)

    def close(self) -> list[ShardInfo]:
        self._close_current()
        return self.shards


class LoadedItems(Dataset):
    """``(index, signal or None, problem or None)`` of a data set, so that DataLoader workers
    can decode and resample in parallel and a bad file comes back as its message."""

    def __init__(self, dataset: Any, skip_bad: bool) -> None:
        self.dataset, self.skip_bad = dataset, skip_bad

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            # ``load``, not ``ds[i]``: with skip_bad_files, ``ds[i]`` stands in the next
            # readable clip for a bad one, which would write that clip twice.
            return index, self.dataset.load(index), None
        except (UsageError, OSError, ValueError) as error:
            if not self.skip_bad:
                raise
            return index, None, " ".join(str(error).split())


def check_output_folder(output: Path, overwrite: bool, flag: str) -> None:
    """Refuse an existing non-empty ``output`` (or a file there) unless ``overwrite``."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"{flag} {output} is a file; choose another {flag}")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UsageError(
            f"{flag} {output} exists and is not empty; choose another {flag}, or set"
            f" {flag.replace('.output', '.overwrite')} to move it aside to"
            f" {output.name}.old-<n> (nothing is deleted)"
        )


def publish_folder(partial: Path, output: Path) -> Path | None:
    """Rename the finished ``partial`` folder to ``output``; an old one is moved aside
    (an empty one removed). Returns where the old folder went."""
    moved = None
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
    else:
        moved = move_aside(output)
    partial.rename(output)
    return moved


def item_metadata(dataset: Any, index: int) -> dict[str, Any]:
    record = dataset.records[index]
    meta: dict[str, Any] = {
        "label": int(record.label),
        "category": record.category,
        "fold": int(record.fold),
        "source": record.key,
    }
    for name in ("lat", "lon"):
        if getattr(record, name, None) is not None:
            meta[name] = getattr(record, name)
    snrs = getattr(dataset, "snrs", None)
    if isinstance(snrs, list) and len(snrs) == len(dataset.records):
        meta["snr"] = snrs[index]
    return meta


# An item's members and how many samples (per channel) and frames it held.
Encoder = Callable[[torch.Tensor], tuple[dict[str, bytes], int, int]]


@dataclass
class ShardJob:
    """What one ``shard``/``features`` step writes, and where."""

    output: Path
    prefix: str
    max_items: int | None
    max_bytes: int | None
    num_workers: int = 0
    manifest_extra: dict[str, Any] = field(default_factory=dict)


def make_partial_folder(stage: Stage, job: ShardJob) -> Path:
    """The temporary folder beside ``job.output`` that rank 0 writes into."""
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        return Path(
            tempfile.mkdtemp(
                prefix=f".{job.output.name}.partial-", dir=job.output.parent
            )
        )
    except OSError as error:
        raise UsageError(
            f"cannot write beside {job.output}: {error.strerror or error}; choose a"
            f" writable --{stage.section}.output"
        ) from None


def share_manifest(
    stage: Stage, manifest: dict[str, Any], failure: BaseException | None
) -> dict[str, Any]:
    """Rank 0's manifest (or its failure) on every rank, once rank 0 has published the
    folder or failed: the ranks meet here, so none reads before the manifest is in place
    and none goes on (to wait at a later collective) when rank 0 failed."""
    if stage.run.dist.enabled:
        sent: list[Any] = [None if failure is None else str(failure), manifest]
        dist.broadcast_object_list(sent, src=0)
        problem, manifest = sent
    else:
        problem = None if failure is None else str(failure)
    if failure is not None:
        raise failure
    if problem is not None:
        raise UsageError(
            f"{stage.section}: rank 0 failed finishing the shards (its error says why)"
        )
    return manifest


def write_dataset_shards(
    stage: Stage, dataset: Any, job: ShardJob, encode: Encoder
) -> dict[str, Any]:
    """Write every item of ``dataset`` (rank 0; the other ranks keep it company) into a
    temporary folder beside ``job.output``, then rename it; returns the manifest (on every
    rank: rank 0 shares it once the folder is in place)."""
    skip_bad = bool(getattr(dataset, "skip_bad_files", False))
    skipped = list(getattr(dataset, "skipped_files", []))
    partial, writer, stream = None, None, None
    classes: Counter[str] = Counter()
    folds: Counter[int] = Counter()
    samples = frames = 0
    try:
        failure: BaseException | None = None
        if stage.run.is_main:
            try:
                partial = make_partial_folder(stage, job)
                writer = ShardWriter(partial, job.prefix, job.max_items, job.max_bytes)
                # one loader for the whole pass: its workers start once
                stream = iter(
                    DataLoader(
                        LoadedItems(dataset, skip_bad),
                        batch_size=None,
                        num_workers=0 if stage.run.smoke else job.num_workers,
                        worker_init_fn=worker_leaves_signals_to_main,
                    )
                )
            except Exception as error:  # told to the other ranks at the first meeting
                failure = error
        # (at least one meeting, where a failure to start is told to the other ranks)
        for _ in range(max(1, math.ceil(len(dataset) / SHARD_SYNC_ITEMS))):
            status = 0.0 if failure is None else 2.0
            if failure is None and stream is not None and writer is not None:
                try:
                    for index, item, problem in itertools.islice(
                        stream, SHARD_SYNC_ITEMS
                    ):
                        if problem is not None or item is None:
                            skipped.append(dataset.records[index].key)
                            stage.warn(f"skipped {problem}")
                            continue
                        members, item_samples, item_frames = encode(item)
                        meta = item_metadata(dataset, index)
                        members["json"] = json_bytes(meta)
                        writer.add(shard_key(index, meta["source"]), members)
                        classes[meta["category"]] += 1
                        folds[meta["fold"]] += 1
                        samples += item_samples
                        frames += item_frames
                except Exception as error:  # told to the other ranks, then raised here
                    status, failure = 2.0, error
                if failure is None and stage.stop.requested:
                    status = 1.0
            # Every SHARD_SYNC_ITEMS items the ranks meet (none waits long at a collective)
            # and learn whether rank 0 failed or was stopped.
            verdict = all_reduce_sum(torch.tensor([status]), stage.run.dist).item()
            if failure is not None:
                raise failure
            if verdict >= 2:
                raise UsageError(
                    f"{stage.section}: rank 0 failed writing the shards (its error says why)"
                )
            if verdict > 0:
                raise StopRequested(
                    f"{stage.section}: stopped while writing shards; nothing kept (--resume starts it again)"
                )
        manifest: dict[str, Any] = {}
        if stage.run.is_main:
            try:
                assert writer is not None and partial is not None
                shards = writer.close()
                total = sum(shard.items for shard in shards)
                if total == 0:
                    raise UsageError(
                        f"{stage.section}: no item of the data set could be read; nothing written"
                    )
                rate = getattr(dataset, "sample_rate", None)
                last = len(shards) - 1
                manifest = {
                    "format": SHARD_FORMAT,
                    "num_items": total,
                    "class_names": list(dataset.class_names),
                    "counts_per_class": dict(sorted(classes.items())),
                    "counts_per_fold": {str(k): v for k, v in sorted(folds.items())},
                    "signal_kind": getattr(dataset, "signal_kind", "audio"),
                    "sample_rate": rate,
                    "total_samples": samples,
                    "total_seconds": (samples / rate) if rate else None,
                    "source": {
                        "data_set": type(dataset).__name__,
                        "settings": source_settings(stage),
                    },
                    "skipped": skipped,
                    "pattern": f"{job.prefix}-{{000000..{last:06d}}}.tar",
                    "shards": [vars(shard) for shard in shards],
                    **job.manifest_extra,
                }
                if frames:
                    manifest["total_frames"] = frames
                (partial / "manifest.json").write_text(
                    json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                    encoding="utf-8",
                )
                finished, partial = partial, None  # finished work is never deleted
                try:
                    moved = publish_folder(finished, job.output)
                except OSError as error:
                    raise UsageError(
                        f"the shards are written, but could not be moved to {job.output}"
                        f" ({error.strerror or error}): they are in {finished}; move that folder"
                        f" there yourself, or rerun with another --{stage.section}.output"
                    ) from None
                if moved is not None:
                    stage.info(f"the earlier {job.output} is now {moved}")
            except Exception as error:  # told to the other ranks, then raised here
                failure = error
        return share_manifest(stage, manifest, failure)
    finally:
        if writer is not None:
            writer.close()
        if partial is not None:  # a failed or stopped write leaves nothing half-done
            shutil.rmtree(partial, ignore_errors=True)


def source_settings(stage: Stage) -> dict[str, Any]:
    """The data section the shards were made from (its root as the run read it)."""
    if not hasattr(stage.components.config, "data"):
        return {}
    settings = stage.components.settings("data")
    if stage.run.options.data_dir is not None and "root" in settings:
        settings["root"] = stage.run.options.data_dir
    return settings


def resolve_output(
    stage: Stage, output: str | None, overwrite: bool, default_name: str
) -> Path:
    """``output``, or ``<out>/<step>/<default_name>``; checked on rank 0, the verdict shared."""
    path = Path(output) if output else stage.stage_dir / default_name
    # A symlink (or a folder under one) is written where it points: the finished folder is
    # renamed onto its real place, beside which the temporary folder is made.
    path = Path(os.path.realpath(path))
    flag = f"--{stage.section}.output"
    problem = None
    if stage.run.is_main:
        try:
            # the run's own default folder is the step's to replace (moved aside, not deleted)
            check_output_folder(path, overwrite or not output, flag)
        except UsageError as error:
            problem = error
        except (
            OSError
        ) as error:  # unreadable: the other ranks must hear of it, not hang
            problem = UsageError(
                f"{flag} {path}: cannot be checked ({error.strerror or error})"
            )
    if (
        all_reduce_sum(torch.tensor([1.0 if problem else 0.0]), stage.run.dist).item()
        > 0
    ):
        raise problem or UsageError(f"{flag}: refused on rank 0 (see its message)")
    return path


def check_shard_sizes(
    section: str, max_items: int | None, max_megabytes: float | None
) -> None:
    if max_items is not None and max_items < 1:
        raise UsageError(
            f"--{section}.max_items must be >= 1 (or unset), got {max_items}"
        )
    if max_megabytes is not None and max_megabytes <= 0:
        raise UsageError(
            f"--{section}.max_megabytes must be positive (or unset), got {max_megabytes}"
        )


def summarise(
    stage: Stage, manifest: dict[str, Any], output: Path, what: str
) -> dict[str, Any]:
    """The step's one-line report and its summary from rank 0's ``manifest`` (every rank
    has it: ``write_dataset_shards`` shares it), so the same on every rank."""
    seconds = manifest.get("total_seconds")
    hours = None if seconds is None else seconds / 3600.0
    summary = {
        "output": str(output),
        "manifest": str(output / "manifest.json"),
        "pattern": str(output / manifest.get("pattern", "")),
        "items": manifest.get("num_items"),
        "shards": len(manifest.get("shards", [])),
        "hours": None if hours is None else round(hours, 4),
        "skipped": len(manifest.get("skipped", [])),
    }
    duration = ""
    if seconds is not None:
        duration = f", {hours:.2f} h" if seconds >= 360 else f", {seconds:.1f} s"
    stage.info(
        f"wrote {summary['items']} {what} in {summary['shards']} shards{duration}"
        f" ({summary['skipped']} skipped) to {output}"
    )
    return summary


@recipe_registry.register("shard", version="1.0")
def write_shards(
    stage: Stage,
    /,
    *,
    output: str | None = None,
    prefix: str = "shard",
    max_items: int | None = 10000,
    max_megabytes: float | None = 1024.0,
    overwrite: bool = False,
    num_workers: int = 4,
) -> StepResult:
    """Write the spec's data set once into WebDataset tar shards, for ``audio_shards`` to stream.

    Each clip becomes ``<key>.wav`` (mono 16-bit PCM at the data set's sample rate; IQ frames
    ``<key>.pth``, a ``[2, L]`` float32 tensor) and ``<key>.json`` (label, category, fold,
    source); ``manifest.json`` lists counts per class and fold, duration and each shard's
    sha256. Only rank 0 writes. Bad files follow the data set's ``skip_bad_files``.

    Args:
        output: Folder of the shards (default ``<out>/<step>/shards``); an existing non-empty one is refused unless ``overwrite``.
        prefix: Shard file names ``<prefix>-000000.tar``, ...
        max_items: Most items per shard (unset: no limit).
        max_megabytes: Most megabytes per shard (unset: no limit).
        overwrite: Replace an existing output folder, moving it aside to ``<folder>.old-<n>``.
        num_workers: DataLoader workers that decode and resample clips while rank 0 writes.
    """
    check_shard_sizes(stage.section, max_items, max_megabytes)
    path = resolve_output(stage, output, overwrite, "shards")
    dataset = stage.components.dataset()
    if getattr(dataset, "holds_features", False):
        raise UsageError(
            f"{stage.section}: the data set holds precomputed features, not signals; shard the data set they came from"
        )
    iq = getattr(dataset, "signal_kind", "audio") == "iq"
    rate = getattr(dataset, "sample_rate", None)
    if not iq and not rate:
        raise UsageError(
            f"{stage.section}: the data set has no sample_rate to write WAV at"
        )

    def encode(item: torch.Tensor) -> tuple[dict[str, bytes], int, int]:
        if iq:
            return {"pth": tensor_bytes(item.float())}, int(item.shape[-1]), 0
        return {"wav": wav_bytes(item, int(rate))}, int(item.shape[-1]), 0

    job = ShardJob(
        path,
        prefix,
        max_items,
        None if max_megabytes is None else int(max_megabytes * 1e6),
        num_workers,
        {"members": {"signal": "pth" if iq else "wav", "labels": "json"}},
    )
    manifest = write_dataset_shards(stage, dataset, job, encode)
    return StepResult(summarise(stage, manifest, path, "clips"))


FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@recipe_registry.register("features", version="1.0")
def write_features(
    stage: Stage,
    /,
    *,
    output: str | None = None,
    prefix: str = "features",
    max_items: int | None = 10000,
    max_megabytes: float | None = 1024.0,
    overwrite: bool = False,
    dtype: Literal["float32", "float16"] = "float32",
    num_workers: int = 4,
) -> StepResult:
    """Write the spec transform's full-length features of every clip into shards, for ``feature_shards``.

    Each clip becomes ``<key>.pth`` (its ``[C, T, F]`` features before any window or
    normalisation, e.g. the 128-bin Kaldi fbank of the whole clip) and ``<key>.json``; the
    manifest records the transform's name and settings, which a run on these features must
    match. Computed on the run's device; only rank 0 writes.

    Args:
        output: Folder of the shards (default ``<out>/<step>/features``); an existing non-empty one is refused unless ``overwrite``.
        prefix: Shard file names ``<prefix>-000000.tar``, ...
        max_items: Most items per shard (unset: no limit).
        max_megabytes: Most megabytes per shard (unset: no limit).
        overwrite: Replace an existing output folder, moving it aside to ``<folder>.old-<n>``.
        dtype: float32 (exactly what the transform computes) or float16 (half the size, about 3 significant digits).
        num_workers: DataLoader workers that decode and resample clips while rank 0 writes.
    """
    check_shard_sizes(stage.section, max_items, max_megabytes)
    if dtype not in FEATURE_DTYPES:
        raise UsageError(
            f"--{stage.section}.dtype must be float32 or float16, got {dtype!r}"
        )
    path = resolve_output(stage, output, overwrite, "features")
    dataset = stage.components.dataset()
    if getattr(dataset, "holds_features", False):
        raise UsageError(
            f"{stage.section}: the data set already holds precomputed features; compute them from the audio data set"
        )
    transform = stage.components.transform().eval()
    name = getattr(transform, "registered_name", None)
    try:  # a transform without the split cannot precompute; say so before reading any data
        probe = torch.zeros((1, 2, 4096) if transform.input_kind == "iq" else (1, 4096))
        _, _ = transform.features(probe.to(stage.run.device))
    except NotImplementedError:
        name = None
    if name is None:
        raise UsageError(
            f"{stage.section}: transform {type(transform).__name__} cannot precompute its features;"
            " use kaldi_fbank, log_mel or iq_spectrogram"
        )
    channels, _, bins = transform.output_shape(4096)

    @torch.no_grad()
    def encode(item: torch.Tensor) -> tuple[dict[str, bytes], int, int]:
        batch = item.to(stage.run.device).float().unsqueeze(0)
        computed, frames = transform.features(batch, torch.tensor([item.shape[-1]]))
        clip = computed[0, :, : int(frames[0])].to(FEATURE_DTYPES[dtype])
        return {"pth": tensor_bytes(clip)}, int(item.shape[-1]), int(frames[0])

    job = ShardJob(
        path,
        prefix,
        max_items,
        None if max_megabytes is None else int(max_megabytes * 1e6),
        num_workers,
        {
            "members": {"features": "pth", "labels": "json"},
            "transform": {
                "name": name,
                "class": type(transform).__name__,
                "settings": json.loads(
                    json.dumps(stage.components.settings("transform"))
                ),
            },
            "feature_layout": "C, T, F",
            "feature_shape": [int(channels), None, int(bins)],
            "feature_dtype": dtype,
        },
    )
    manifest = write_dataset_shards(stage, dataset, job, encode)
    return StepResult(summarise(stage, manifest, path, "clips' features"))


__all__ = [
    "FEATURE_DTYPES",
    "SHARD_FORMAT",
    "ShardWriter",
    "write_features",
    "write_shards",
    "shard_key",
    "tensor_bytes",
    "wav_bytes",
    "write_dataset_shards",
]
