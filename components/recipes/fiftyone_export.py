"""FiftyOne export of an ``embed`` step: every clip as a sample, searchable by similarity.

Each sample's media is a spectrogram PNG of its clip (the run's transform, one centred
window, time left to right and frequency bottom to top, one pixel per frame and bin; the
channels of a multi-channel transform stacked). The images are written once into
``<cache>/spectrograms`` under a name made of the clip's identity (path, size, modification
time), the data set and the transform's settings, so a later export reuses them and a
changed file or transform gets a new one. A sample also holds ``audio_path``, the label
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
SPECTROGRAM_VERSION = 1  # bump when the image's layout changes: every image is redrawn


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


def clip_identity(key: str) -> dict[str, Any]:
    """What a clip's image depends on besides the transform: its file's path, size and mtime."""
    identity: dict[str, Any] = {"key": key}
    if not key.startswith("index:"):
        try:
            stat = os.stat(key)
        except OSError:
            return identity
        identity.update(
            path=str(Path(key).resolve()), size=stat.st_size, mtime_ns=stat.st_mtime_ns
        )
    return identity


def spectrogram_name(key: str, setting: dict[str, Any]) -> str:
    """The image's file name: a digest of the clip's identity and the drawing's settings."""
    identity = {
        "clip": clip_identity(key),
        "setting": setting,
        "version": SPECTROGRAM_VERSION,
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32] + ".png"


@torch.no_grad()
def spectrogram(transform: Any, clip: torch.Tensor) -> torch.Tensor:
    """``[C * F, T]`` features of one clip, frequency first (row 0 the lowest bin of channel 0)."""
    signals, _, lengths = collate_signals([(clip, 0)])
    features = transform(signals, lengths)[0].float().cpu()  # [C, T, F]
    return features.transpose(1, 2).reshape(-1, features.shape[1])


def write_spectrograms(
    stage: Stage, dataset: Any, transform: Any, folder: Path, image: Any
) -> tuple[list[Path], int]:
    """One PNG per item of ``dataset`` in ``folder`` (kept when present); paths and count drawn."""
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
    transform.eval()
    paths, drawn = [], 0
    for index, record in enumerate(dataset.records):
        path = folder / spectrogram_name(record.key, setting)
        paths.append(path)
        if path.is_file():
            continue
        features = spectrogram(transform, dataset[index][0]).numpy()
        buffer = io.BytesIO()
        image.imsave(buffer, features, cmap="magma", origin="lower", format="png")
        atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
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
    problem = foreign_dataset(fo, name, flag) if run.is_main else None
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
        f"{len(images) - drawn} reused from {folder}); similarity index {BRAIN_SIMILARITY!r}"
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
    }


__all__ = [
    "BRAIN_SIMILARITY",
    "BRAIN_VISUALIZATION",
    "CREATED_BY",
    "check_fiftyone_name",
    "check_fiftyone_target",
    "export_fiftyone",
    "import_fiftyone",
    "spectrogram",
    "spectrogram_name",
    "write_spectrograms",
]
