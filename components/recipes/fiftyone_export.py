"""FiftyOne export of an ``embed`` step: every clip as a sample, searchable by similarity.

Each sample's media is a spectrogram PNG of its clip (the run's transform, one centred
window, time left to right and frequency bottom to top, one pixel per frame and bin; the
channels of a multi-channel transform stacked), drawn from the record's own clip
(``dataset.load(i)``, never ``ds[i]``, for which ``skip_bad_files`` stands the next readable
clip in for a bad one). A clip that cannot be read any more is left out of the export under
``skip_bad_files`` (named in a warning: its embedding may be of its stand-in) and stops the
run, naming it, otherwise. The images are written once into ``<cache>/spectrograms`` under a
name made of the clip's identity (a file's path, size and modification time; a shard
member's key with its shard's path, size and modification time), the data set and the
transform's settings, so a later export reuses them and a changed file, rewritten shard or
changed transform gets a new one. A sample also holds ``audio_path``, the label
(``ground_truth``, a ``fo.Classification``), ``fold``, ``index`` (into the data set) and the
``embedding``; the dataset gets a cosine similarity index (brain key ``BRAIN_SIMILARITY``:
``dataset.sort_by_similarity(sample_id, k=10)``) and a 2-D PCA visualisation of the
embeddings (``BRAIN_VISUALIZATION``) for the App's embeddings panel.

``fiftyone`` (and ``matplotlib``, which it brings, for the PNGs) are imported only here, when
an export is asked for; without them the run stops with one line saying what to install. A
dataset this exporter made (``info["created_by"]``) is replaced by a new export of the same
name; one it did not make is left alone, and the run says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from stat import S_ISREG
from typing import Any

import torch

from components.run_checkpoint import atomic_write
from components.distributed import all_reduce_sum
from components.errors import UsageError
from components.runtime import RunRecord, Stage, collate_signals

CREATED_BY = (
    "sigmae-gen embed"  # dataset.info["created_by"] of the datasets exported here
)
BRAIN_SIMILARITY = "sigmae_similarity"
BRAIN_VISUALIZATION = "sigmae_visualization"
# Bump when the image's layout or identity changes: every image is redrawn (2: drawn from
# the record's own clip, never a skip_bad_files stand-in; shard members keyed by their shard).
SPECTROGRAM_VERSION = 2


def check_fiftyone_name(name: str, flag: str) -> None:
    """A dataset name must be a non-empty string."""
    if not isinstance(name, str) or not name.strip():
        raise UsageError(
            f"{flag}: a FiftyOne dataset name is needed, got {name!r}; pass e.g. {flag} my_clips"
        )


def import_fiftyone(flag: str) -> tuple[Any, Any, Any]:
    """``(fiftyone, fiftyone.brain, matplotlib.image)``, or a UsageError naming what to install."""
    try:
        import fiftyone
        import fiftyone.brain
    except ImportError as error:
        raise UsageError(
            f"{flag} needs the fiftyone package ({error}): pip install fiftyone"
        ) from None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.image
    except ImportError as error:
        raise UsageError(
            f"{flag} needs matplotlib to draw the spectrogram images ({error}): pip install matplotlib"
        ) from None
    return fiftyone, fiftyone.brain, matplotlib.image


def clip_identity(
    key: str, stats: dict[str, os.stat_result | None] | None = None
) -> dict[str, Any] | None:
    """What a clip's image depends on besides the transform, or None when nothing does.

    An ``index:<i>`` key (a synthetic set) is its own identity; a file's is its resolved
    path, size and modification time; a shard member's (key ``<shard>/<member key>``) is
    the member key with its shard file's. None when no file under the key exists (a file
    gone since the data set opened): such a clip is read, never an image reused.
    ``stats`` memoises the ``os.stat`` of the folders and shards met on the way up.
    """
    if key.startswith("index:"):
        return {"key": key}
    stats = {} if stats is None else stats
    path = Path(key)
    for candidate in (path, *path.parents):
        name = str(candidate)
        if name not in stats:
            try:
                stats[name] = os.stat(candidate)
            except OSError:
                stats[name] = None
        stat = stats[name]
        if stat is None or not S_ISREG(stat.st_mode):
            continue
        identity: dict[str, Any] = {
            "key": key,
            "path": str(candidate.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
        if candidate != path:  # a member of the shard ``candidate``
            identity["member"] = path.relative_to(candidate).as_posix()
        return identity
    return None


def spectrogram_name(identity: dict[str, Any], setting: dict[str, Any]) -> str:
    """The image's file name: a digest of the clip's identity and the drawing's settings."""
    text = json.dumps(
        {"clip": identity, "setting": setting, "version": SPECTROGRAM_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32] + ".png"


@torch.no_grad()
def spectrogram(transform: Any, clip: torch.Tensor) -> torch.Tensor:
    """``[C * F, T]`` features of one clip, frequency first (row 0 the lowest bin of channel 0)."""
    signals, _, lengths = collate_signals([(clip, 0)])
    features = transform(signals, lengths)[0].float().cpu()  # [C, T, F]
    return features.transpose(1, 2).reshape(-1, features.shape[1])


def read_own_clip(dataset: Any, index: int) -> torch.Tensor:
    """Record ``index``'s own clip: ``load``, not ``ds[i]``, which under ``skip_bad_files``
    returns the next readable clip in place of a bad one."""
    load = getattr(dataset, "load", None)
    return load(index) if callable(load) else dataset[index][0]


def write_spectrograms(
    stage: Stage, dataset: Any, transform: Any, folder: Path, image: Any
) -> tuple[list[Path | None], int]:
    """One PNG per item of ``dataset`` in ``folder`` (kept when present); paths and count drawn.

    An item's path is None when its own clip cannot be read and the data set skips bad
    files; without ``skip_bad_files`` such a clip is a UsageError naming it.
    """
    flag = f"--{stage.section}.fiftyone"
    setting = {
        "data": type(dataset).__name__,
        "data_config": (
            stage.components.settings("data")
            if hasattr(stage.components.config, "data")
            else {}
        ),
        "smoke": stage.run.smoke,
        "transform": type(transform).__name__,
        "transform_config": stage.components.settings("transform"),
    }
    skip_bad = bool(getattr(dataset, "skip_bad_files", False))
    transform.eval()
    paths: list[Path | None] = []
    drawn = 0
    stats: dict[str, os.stat_result | None] = {}
    for index, record in enumerate(dataset.records):
        identity = clip_identity(record.key, stats)
        path = folder / spectrogram_name(identity or {"key": record.key}, setting)
        if identity is not None and path.is_file():
            paths.append(path)
            continue
        try:
            clip = read_own_clip(dataset, index)
        except (UsageError, OSError, ValueError) as error:
            if skip_bad:
                paths.append(None)
                continue
            if isinstance(error, UsageError):
                raise
            raise UsageError(
                f"{flag}: {record.key} cannot be read to draw its spectrogram"
                f" ({' '.join(str(error).split())}); restore it, or pass"
                " --data.skip_bad_files to leave such clips out of the export"
            ) from None
        features = spectrogram(transform, clip).numpy()
        buffer = io.BytesIO()
        image.imsave(buffer, features, cmap="magma", origin="lower", format="png")
        atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
        paths.append(path)
        drawn += 1
    return paths, drawn


def foreign_dataset(fo: Any, name: str, flag: str) -> str | None:
    """Why ``name`` cannot be exported to (a dataset of that name this exporter did not make), or None."""
    if name not in fo.list_datasets():
        return None
    existing = fo.load_dataset(name)
    if (existing.info or {}).get("created_by") == CREATED_BY:
        return None
    return (
        f"{flag} {name}: a FiftyOne dataset of that name exists and was not exported by this "
        "script; it is left as it is: pass another name"
    )


def check_fiftyone_target(run: RunRecord, name: str, flag: str) -> None:
    """Before any work: fiftyone (and matplotlib) importable, ``name`` free or this exporter's.

    The main rank asks the database; under torchrun every rank stops when it refuses.
    """
    check_fiftyone_name(name, flag)
    fo, _, _ = import_fiftyone(flag)
    problem = None
    if run.is_main:
        try:
            problem = foreign_dataset(fo, name, flag)
        except (
            Exception
        ) as error:  # the database: the other ranks must hear of it, not hang
            problem = f"{flag} {name}: fiftyone's database cannot be asked ({error})"
    refused = all_reduce_sum(torch.tensor([1.0 if problem else 0.0]), run.dist)
    if problem or float(refused) > 0:
        raise UsageError(
            problem or f"{flag} {name}: refused on the main rank (see its message)"
        )


def replace_own_dataset(fo: Any, name: str, flag: str) -> None:
    """Delete the dataset ``name`` if this exporter made it; refuse to touch anyone else's."""
    problem = foreign_dataset(fo, name, flag)
    if problem:
        raise UsageError(problem)
    if name in fo.list_datasets():
        fo.load_dataset(name).delete()


def export_fiftyone(
    stage: Stage,
    payload: dict[str, Any],
    *,
    name: str,
    persistent: bool,
    cache_dir: Path,
) -> dict[str, Any]:
    """Export the data set's clips with their embeddings (``payload``) as FiftyOne dataset ``name``."""
    flag = f"--{stage.section}.fiftyone"
    fo, fob, image = import_fiftyone(flag)
    dataset = stage.components.dataset()
    folder = Path(cache_dir) / "spectrograms"
    images, drawn = write_spectrograms(
        stage, dataset, stage.components.transform(), folder, image
    )
    unreadable = [payload["paths"][i] for i, path in enumerate(images) if path is None]
    if len(unreadable) == len(images):
        raise UsageError(
            f"{flag} {name}: none of the {len(images)} clips of {type(dataset).__name__}"
            " can be read any more; restore the data and run the step again"
        )
    if unreadable:
        stage.warn(
            f"{flag} {name}: left out {len(unreadable)} clip(s) that cannot be read any more"
            " (skip_bad_files; the embedding step may have read another clip in their place): "
            + ", ".join(unreadable[:5])
            + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        )
    replace_own_dataset(fo, name, flag)
    export = fo.Dataset(name)
    export.persistent = bool(persistent)
    export.info = {
        "created_by": CREATED_BY,
        "spec": stage.run.name,
        "checkpoint": payload["checkpoint"],
        "pooling": payload["pooling"],
    }
    export.save()
    class_names = list(payload["class_names"])
    embeddings = payload["embeddings"].float().numpy()
    samples = []
    for index, (path, label) in enumerate(zip(images, payload["labels"].tolist())):
        if path is None:
            continue
        samples.append(
            fo.Sample(
                filepath=str(path),
                audio_path=payload["paths"][index],
                ground_truth=fo.Classification(
                    label=(
                        class_names[label]
                        if 0 <= label < len(class_names)
                        else str(label)
                    )
                ),
                fold=int(payload["folds"][index]),
                index=index,
                embedding=embeddings[index],
            )
        )
    export.add_samples(samples, progress=False)
    fob.compute_similarity(
        export,
        embeddings="embedding",
        brain_key=BRAIN_SIMILARITY,
        metric="cosine",
        backend="sklearn",
        progress=False,
    )
    visualization = None
    if len(samples) >= 3:
        fob.compute_visualization(
            export,
            embeddings="embedding",
            method="pca",
            num_dims=2,
            brain_key=BRAIN_VISUALIZATION,
            progress=False,
        )
        visualization = BRAIN_VISUALIZATION
    else:
        stage.warn(f"{flag} {name}: {len(samples)} sample(s): no 2-D visualisation")
    stage.info(
        f"FiftyOne dataset {name!r}: {len(samples)} clips ({drawn} spectrograms drawn, "
        f"{len(samples) - drawn} reused from {folder}"
        + (f", {len(unreadable)} unreadable left out" if unreadable else "")
        + f"); similarity index {BRAIN_SIMILARITY!r}"
        + (f", PCA visualisation {visualization!r}" if visualization else "")
        + (
            "; persistent"
            if persistent
            else f"; not persistent (gone when FiftyOne's database restarts: pass {flag}_persistent true to keep it)"
        )
    )
    return {
        "name": name,
        "samples": len(samples),
        "persistent": bool(persistent),
        "similarity_key": BRAIN_SIMILARITY,
        "visualization_key": visualization,
        "spectrograms": str(folder),
        "spectrograms_drawn": drawn,
        "unreadable_left_out": len(unreadable),
    }


__all__ = [
    "BRAIN_SIMILARITY",
    "BRAIN_VISUALIZATION",
    "CREATED_BY",
    "check_fiftyone_name",
    "check_fiftyone_target",
    "export_fiftyone",
    "import_fiftyone",
    "read_own_clip",
    "spectrogram",
    "spectrogram_name",
    "write_spectrograms",
]
