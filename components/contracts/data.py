"""Contract checks every registered data set (``SignalDataset``) must pass, and its fixtures.

Each ``check_<property>(factory)`` takes ``factory(**overrides) -> data set`` building a small
instance. Fixtures write tiny, real data folders under ``workdir``: an ESC-50-shaped folder
whose WAVs are written with the standard library ``wave`` module, a class-per-folder audio
tree, a RadioML-shaped pickle (numpy) and an HDF5 file in the real 2018.01A layout (h5py; the
fixture raises ``ModuleNotFoundError`` where h5py is absent).
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
import tarfile
import wave
from pathlib import Path
from typing import Any, Callable

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts import factory_accepts
from components.data.base import Record, SignalDataset
from components.data.radioml import RADIOML2018_CLASSES
from components.registry import fixture_registry

DataFactory = Callable[..., SignalDataset]

__all__ = [
    "check_deterministic",
    "check_fold_filtering",
    "check_items_match_records",
    "check_records_and_labels",
    "write_pcm_wav",
]


def check_records_and_labels(factory: DataFactory) -> None:
    """Records are ``Record`` s with labels in ``class_names``, matching categories and folds >= 1."""
    ds = factory()
    assert ds.signal_kind in ("audio", "iq", "features"), ds.signal_kind
    assert len(ds) == len(ds.records) > 0
    assert ds.num_classes == len(ds.class_names) > 0
    assert all(isinstance(name, str) for name in ds.class_names) and len(
        set(ds.class_names)
    ) == len(ds.class_names)
    for record in ds.records:
        assert isinstance(record, Record), type(record)
        assert (
            isinstance(record.label, int) and 0 <= record.label < ds.num_classes
        ), record
        assert record.category == ds.class_names[record.label], record
        assert isinstance(record.fold, int) and record.fold >= 1, record


def check_items_match_records(factory: DataFactory) -> None:
    """``ds[i]`` is ``(float32 signal, label)``: ``[N]`` for audio, ``[2, L]`` for IQ (precomputed
    features: time-last ``[C, F, T]``); out of range raises IndexError."""
    ds = factory()

    @settings(deadline=None)
    @given(index=st.integers(0, len(ds) - 1))
    def run(index: int) -> None:
        signal, label = ds[index]
        assert isinstance(signal, torch.Tensor) and signal.dtype == torch.float32, type(
            signal
        )
        if ds.signal_kind == "audio":
            assert signal.dim() == 1 and signal.shape[0] > 0, signal.shape
        elif ds.signal_kind == "features":
            assert signal.dim() == 3 and signal.shape[2] > 0, signal.shape
        else:
            assert (
                signal.dim() == 2 and signal.shape[0] == 2 and signal.shape[1] > 0
            ), signal.shape
        assert torch.isfinite(signal).all()
        assert isinstance(label, int) and label == ds.records[index].label

    run()
    try:
        ds[len(ds)]
    except IndexError:
        pass
    else:
        raise AssertionError(f"{type(ds).__name__}[{len(ds)}] did not raise IndexError")


def check_fold_filtering(factory: DataFactory) -> None:
    """``folds=[...]`` keeps exactly the records of those folds; an absent fold is a ValueError."""
    full = factory()
    available = sorted({record.fold for record in full.records})

    @settings(deadline=None)
    @given(chosen=st.lists(st.sampled_from(available), min_size=1, unique=True))
    def run(chosen: list[int]) -> None:
        subset = factory(folds=chosen)
        assert subset.records == [
            record for record in full.records if record.fold in chosen
        ]
        assert subset.class_names == full.class_names

    run()
    try:
        factory(folds=[max(available) + 100])
    except ValueError:
        pass
    else:
        raise AssertionError(
            f"{type(full).__name__}(folds=[{max(available) + 100}]) selected a fold that does not exist"
        )


def check_deterministic(factory: DataFactory) -> None:
    """Two instances built alike hold the same records and signals; seeded sets differ by seed."""
    first, second = factory(), factory()
    assert first.records == second.records and first.class_names == second.class_names
    seeded = factory_accepts(factory, "seed")

    @settings(deadline=None)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(first) - 1))
        torch.testing.assert_close(first[index][0], second[index][0], atol=0, rtol=0)
        if seeded:
            seed = data.draw(st.integers(0, 2**16))
            again = factory(seed=seed)[index][0]
            torch.testing.assert_close(
                factory(seed=seed)[index][0], again, atol=0, rtol=0
            )
            assert not torch.equal(
                factory(seed=seed + 1)[index][0], again
            ), "the seed does not change the signals"

    run()


def write_pcm_wav(
    path: Path, samples: torch.Tensor, sample_rate: int, sample_width: int = 2
) -> None:
    """Write ``[N]`` (mono) or ``[C, N]`` float samples in [-1, 1] as integer PCM with ``wave``."""
    if samples.dim() == 1:
        samples = samples.unsqueeze(0)
    scale = float((1 << (8 * sample_width - 1)) - 1)
    ints = (
        (samples.clamp(-1, 1) * scale).round().to(torch.int64).T.reshape(-1)
    )  # interleave channels
    if sample_width == 1:
        data = bytes((ints + 128).to(torch.uint8).tolist())
    else:
        data = b"".join(
            int(v).to_bytes(sample_width, "little", signed=True) for v in ints.tolist()
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(samples.shape[0])
        writer.setsampwidth(sample_width)
        writer.setframerate(sample_rate)
        writer.writeframes(data)


def tone_clip(
    freq: float, sample_rate: int, num_samples: int, channels: int = 1
) -> torch.Tensor:
    t = torch.arange(num_samples, dtype=torch.float64) / sample_rate
    clip = 0.5 * torch.sin(2 * math.pi * freq * t)
    return (
        clip.unsqueeze(0).repeat(channels, 1).to(torch.float32)
        if channels > 1
        else clip.to(torch.float32)
    )


def write_esc50_folder(root: Path, categories: tuple[str, ...] = ("dog", "rooster", "rain", "crying_baby"),
                       clips_per_fold: int = 1, num_samples: int = 2205, sample_rate: int = 44100) -> Path:  # fmt: skip
    """An ESC-50-shaped folder: ``meta/esc50.csv`` and 16-bit WAVs, every category in every fold."""
    rows = []
    for fold in range(1, 6):
        for target, category in enumerate(categories):
            for take in range(clips_per_fold):
                name = f"{fold}-{1000 + target}-{'ABCDEFGH'[take]}-{target}.wav"
                write_pcm_wav(
                    root / "audio" / name,
                    tone_clip(
                        300.0 * (target + 1) + 7 * fold, sample_rate, num_samples
                    ),
                    sample_rate,
                )
                rows.append(
                    [
                        name,
                        fold,
                        target,
                        category,
                        str(target % 2 == 0),
                        f"{1000 + target}",
                        "ABCDEFGH"[take],
                    ]
                )
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
        )
        writer.writerows(rows)
    return root


@fixture_registry.register("data/esc50")
def esc50_fixture(workdir: Path) -> dict[str, Any]:
    root = write_esc50_folder(workdir / "ESC-50-master")
    return {
        "root": str(root),
        "sample_rate": 16000,
        "cache_dir": str(workdir / "cache"),
    }


@fixture_registry.register("data/audio_folder")
def audio_folder_fixture(workdir: Path) -> dict[str, Any]:
    root = workdir / "audio_folder"
    formats = [
        (1, 1),
        (2, 1),
        (3, 2),
        (4, 1),
        (2, 2),
    ]  # (sample width, channels): 8- to 32-bit, mono and stereo
    for label, name in enumerate(("birds", "engine", "voice")):
        for i, (width, channels) in enumerate(formats):
            clip = tone_clip(400.0 * (label + 1) + 11 * i, 8000, 600, channels)
            write_pcm_wav(root / name / f"clip{i}.wav", clip, 8000, width)
    return {
        "root": str(root),
        "sample_rate": 16000,
        "clip_seconds": 0.05,
        "cache_dir": str(workdir / "cache"),
    }


def radioml2016_table(
    mods: tuple[str, ...], snrs: tuple[int, ...], per_key: int, length: int = 128
) -> dict[tuple[str, int], Any]:
    """A RadioML 2016-shaped dict of numpy arrays (needs numpy, as the real pickle does)."""
    import numpy

    table = {}
    for m, mod in enumerate(mods):
        for s, snr in enumerate(snrs):
            g = torch.Generator().manual_seed(100 * m + s)
            frames = torch.randn(per_key, 2, length, generator=g) * (1 + m)
            table[(mod, snr)] = numpy.asarray(frames.numpy(), dtype=numpy.float32)
    return table


@fixture_registry.register("data/radioml2016")
def radioml2016_fixture(workdir: Path) -> dict[str, Any]:
    path = workdir / "RML2016.10a_dict.pkl"
    with open(path, "wb") as handle:
        pickle.dump(
            radioml2016_table(("QPSK", "BPSK", "8PSK"), (-2, 0, 18), 4),
            handle,
            protocol=2,
        )
    return {"root": str(path)}


@fixture_registry.register("data/radioml2018")
def radioml2018_fixture(workdir: Path) -> dict[str, Any]:
    """A file in the real 2018.01A layout, written with h5py: ``X`` float32 [n, 1024, 2],
    ``Y`` one-hot int64 [n, 24], ``Z`` int64 SNR [n, 1] (h5py missing: ModuleNotFoundError).
    """
    import h5py
    import numpy

    per_group, snrs, length = 2, (-10, 10), 1024
    n = len(RADIOML2018_CLASSES) * len(snrs) * per_group
    labels = torch.arange(len(RADIOML2018_CLASSES)).repeat_interleave(
        len(snrs) * per_group
    )
    path = workdir / "GOLD_XYZ_OSC.0001_1024.hdf5"
    with h5py.File(path, "w") as out:
        out.create_dataset(
            "X",
            data=torch.randn(n, length, 2, generator=torch.Generator().manual_seed(0))
            .numpy()
            .astype(numpy.float32),
        )
        out.create_dataset(
            "Y",
            data=torch.nn.functional.one_hot(labels, len(RADIOML2018_CLASSES))
            .numpy()
            .astype(numpy.int64),
        )
        out.create_dataset(
            "Z",
            data=torch.tensor(snrs)
            .repeat_interleave(per_group)
            .repeat(len(RADIOML2018_CLASSES))
            .view(n, 1)
            .numpy()
            .astype(numpy.int64),
        )
    return {"root": str(path)}


def write_tar_shard(path: Path, members: dict[str, bytes]) -> Path:
    """A tar shard of ``members`` (name -> bytes), in order, as webdataset's ``TarWriter`` lays it out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@fixture_registry.register("data/audio_shards")
def audio_shards_fixture(workdir: Path) -> dict[str, Any]:
    """Two shards of 8 kHz WAVs: one labelled by ``.json`` (index, category, fold), one by ``.cls``."""
    names = ("birds", "engine", "voice")
    for shard in range(2):
        members: dict[str, bytes] = {}
        for i in range(6):
            label, key = i % 3, f"take.{shard}/clip{i:02d}"
            wav = workdir / "wav" / f"{shard}-{i}.wav"
            write_pcm_wav(
                wav, tone_clip(300.0 * (label + 1) + 13 * i, 8000, 480 + 40 * i), 8000
            )
            members[f"{key}.wav"] = wav.read_bytes()
            if shard == 0:
                tags = {"label": label, "category": names[label], "fold": i % 2 + 1}
                members[f"{key}.json"] = json.dumps(tags).encode()
            else:
                members[f"{key}.cls"] = str(label).encode()
        write_tar_shard(workdir / "shards" / f"part-{shard:03d}.tar", members)
    return {
        "shards": str(workdir / "shards" / "part-{000..001}.tar"),
        "sample_rate": 16000,
        "clip_seconds": 0.05,
        "num_folds": 2,
        "cache_dir": str(workdir / "cache"),
    }


def write_tensor_shards(workdir: Path, tensors: list[torch.Tensor]) -> str:
    """Two shards of ``<key>.pth`` tensors with ``.json`` labels (3 classes, 2 folds); their pattern."""
    for shard in range(2):
        members: dict[str, bytes] = {}
        for i, tensor in enumerate(tensors[shard::2]):
            label = i % 3
            buffer = io.BytesIO()
            torch.save(tensor, buffer)
            members[f"item{shard}{i:02d}.pth"] = buffer.getvalue()
            tags = {"label": label, "category": f"class{label}", "fold": i % 2 + 1}
            members[f"item{shard}{i:02d}.json"] = json.dumps(tags).encode()
        write_tar_shard(workdir / "tensors" / f"part-{shard:03d}.tar", members)
    return str(workdir / "tensors" / "part-{000..001}.tar")


@fixture_registry.register("data/iq_shards")
def iq_shards_fixture(workdir: Path) -> dict[str, Any]:
    frames = [
        torch.randn(2, 64, generator=torch.Generator().manual_seed(i))
        for i in range(12)
    ]
    return {
        "shards": write_tensor_shards(workdir, frames),
        "cache_dir": str(workdir / "cache"),
    }


@fixture_registry.register("data/feature_shards")
def feature_shards_fixture(workdir: Path) -> dict[str, Any]:
    """Kaldi-fbank-shaped features ``[1, T, 16]`` of unequal lengths, with their manifest."""
    features = [
        torch.randn(1, 20 + 3 * i, 16, generator=torch.Generator().manual_seed(i))
        for i in range(12)
    ]
    pattern = write_tensor_shards(workdir, features)
    made_by = {
        "name": "kaldi_fbank",
        "settings": {"sample_rate": 16000, "num_mel_bins": 16},
    }
    manifest = {
        "transform": made_by,
        "sample_rate": 16000,
        "feature_shape": [1, None, 16],
    }
    (workdir / "tensors" / "manifest.json").write_text(json.dumps(manifest))
    return {"shards": pattern, "cache_dir": str(workdir / "cache")}


@fixture_registry.register("data/synthetic_audio")
def synthetic_audio_fixture(workdir: Path) -> dict[str, Any]:
    return {"num_classes": 3, "num_items": 15, "num_samples": 800, "sample_rate": 8000}


@fixture_registry.register("data/synthetic_iq")
def synthetic_iq_fixture(workdir: Path) -> dict[str, Any]:
    return {"num_classes": 3, "num_items": 15, "num_samples": 64}
