"""WAV reading, the decode cache, ESC-50 (including download) and audio folders."""

from __future__ import annotations

import csv
import os
import shutil
import wave
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts.data import tone_clip, write_esc50_folder, write_pcm_wav
from components.data import ESC50, AudioFileError, AudioFolder, DataFormatError, WaveformCache, load_audio, read_wav
from components.data.base import leave_one_fold_out
from components.registry import data_registry


@given(width=st.sampled_from([1, 2, 3, 4]), channels=st.integers(1, 2), length=st.integers(1, 300))
@settings(deadline=None)
def test_read_wav_decodes_every_pcm_width_and_averages_channels(width: int, channels: int, length: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("wav") / "x.wav"
    left = torch.linspace(-0.9, 0.9, length)
    samples = torch.stack([left, -0.5 * left])[:channels]
    write_pcm_wav(path, samples, 8000, width)
    decoded, rate = read_wav(path)
    assert rate == 8000 and decoded.dtype == torch.float32 and decoded.shape == (length,)
    step = 2.0 ** (1 - 8 * width)
    torch.testing.assert_close(decoded, samples.mean(0), atol=2 * step + 1e-6, rtol=0)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "empty"), (b"ID3\x03\x00 mp3 data" * 20, "not a PCM WAV"), (None, "truncated"), ("ulaw", "not a PCM WAV")],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, content: bytes | str | None, problem: str) -> None:
    path = tmp_path / "bad.wav"
    if content is None:
        write_pcm_wav(path, torch.zeros(1000), 8000)
        path.write_bytes(path.read_bytes()[:-300])
    elif content == "ulaw":  # a compressed WAV: format tag 7 (mu-law)
        write_pcm_wav(path, torch.zeros(100), 8000)
        data = bytearray(path.read_bytes())
        data[20:22] = (7).to_bytes(2, "little")
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(content)
    with pytest.raises(AudioFileError, match=problem) as error:
        read_wav(path)
    assert str(path) in str(error.value)


def test_cache_returns_the_decoded_resampled_waveform_and_tracks_changes(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    write_pcm_wav(path, tone_clip(440.0, 44100, 4410), 44100)
    cache = WaveformCache(tmp_path / "cache")
    first = load_audio(path, 16000, cache)
    assert first.shape == (1600,)
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".f32"
    torch.testing.assert_close(load_audio(path, 16000, cache), first, atol=0, rtol=0)
    assert load_audio(path, 8000, cache).shape == (800,)  # another rate, another entry
    write_pcm_wav(path, tone_clip(880.0, 44100, 8820), 44100)  # same file, new content
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert load_audio(path, 16000, cache).shape == (3200,)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]


def test_esc50_interface(tmp_path: Path) -> None:
    root = write_esc50_folder(tmp_path / "ESC-50-master", clips_per_fold=2)
    ds = data_registry.create("esc50", root=str(root), sample_rate=16000, folds=None)
    assert len(ds) == 40 and ds.class_names == ["dog", "rooster", "rain", "crying_baby"]
    waveform, label = ds[5]
    assert waveform.dtype == torch.float32 and waveform.shape == (800,)  # 50 ms at 16 kHz
    assert label == ds.records[5].label and ds.records[5].key.endswith(".wav")
    fold4 = data_registry.create("esc50", root=str(root), sample_rate=16000, folds=[4])
    assert len(fold4) == 8 and {r.fold for r in fold4.records} == {4}
    esc10 = ESC50(root=str(root), esc10=True)
    assert esc10.class_names == ["dog", "rain"] and {r.label for r in esc10.records} == {0, 1}
    # The decoded-audio cache is outside the data folder (tests/test_data_safety_cache.py).
    assert not (root / ".sigmae-cache").exists() and not (root / "audio" / ".sigmae-cache").exists()


def test_esc50_k_fold_protocol() -> None:
    splits = leave_one_fold_out([1, 2, 3, 4, 5])
    assert len(splits) == 5 and splits[0] == ([2, 3, 4, 5], [1])


def test_esc50_missing_root_says_how_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--download"):
        ESC50(root=str(tmp_path / "nowhere"))


def test_esc50_missing_clips_are_counted_or_skipped(tmp_path: Path) -> None:
    root = write_esc50_folder(tmp_path / "ESC-50-master")
    for path in sorted((root / "audio").iterdir())[:3]:
        path.unlink()
    with pytest.raises(FileNotFoundError, match="lists 3 clip"):
        ESC50(root=str(root))
    assert len(ESC50(root=str(root), skip_missing=True)) == 17


def test_esc50_bad_files_raise_one_error_or_are_skipped_with_a_warning(tmp_path: Path) -> None:
    root = write_esc50_folder(tmp_path / "ESC-50-master")
    victims = sorted((root / "audio").iterdir())[:2]
    for path in victims:
        path.write_bytes(b"not audio")
    with pytest.raises(AudioFileError, match="2 unreadable") as error:
        ESC50(root=str(root))
    assert victims[0].name in str(error.value) and "skip_bad_files=True" in str(error.value)
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = ESC50(root=str(root), skip_bad_files=True)
    assert len(ds) == 18 and sorted(ds.skipped_files) == [str(v) for v in victims]


def test_skipped_files_are_the_paths_even_when_a_path_holds_a_colon(tmp_path: Path) -> None:
    root = tmp_path / "take 1: outdoors"
    write_pcm_wav(root / "birds" / "good.wav", tone_clip(400.0, 8000, 600), 8000)
    write_pcm_wav(root / "engine" / "good.wav", tone_clip(800.0, 8000, 600), 8000)
    victim = root / "engine" / "bad: clipped.wav"
    victim.write_bytes(b"not audio")
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = AudioFolder(root=str(root), skip_bad_files=True, cache=False)
    assert ds.skipped_files == [str(victim)] and len(ds) == 2


def test_esc50_csv_without_a_column_names_it(tmp_path: Path) -> None:
    root = write_esc50_folder(tmp_path / "ESC-50-master")
    meta = root / "meta" / "esc50.csv"
    rows = list(csv.reader(meta.open()))
    with meta.open("w", newline="") as handle:
        csv.writer(handle).writerows([row[:2] + row[3:] for row in rows])  # drop "target"
    with pytest.raises(DataFormatError, match="esc50.csv: missing column.*target"):
        ESC50(root=str(root))


def build_zip(tmp_path: Path, clips_per_fold: int = 1) -> Path:
    source = write_esc50_folder(tmp_path / "src" / "ESC-50-master", clips_per_fold=clips_per_fold)
    archive = tmp_path / "master.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(source.rglob("*")):
            zipped.write(path, path.relative_to(source.parent).as_posix())
    shutil.rmtree(tmp_path / "src")
    return archive


def test_esc50_download_from_a_url_extracts_atomically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = build_zip(tmp_path)
    root = tmp_path / "data" / "ESC-50-master"
    ds = ESC50(root=str(root), download=True, url=archive.as_uri())
    assert len(ds) == 20 and (root / "meta" / "esc50.csv").is_file()
    assert "downloading ESC-50" in capsys.readouterr().err
    assert sorted(p.name for p in root.parent.iterdir()) == ["ESC-50-master"]  # no temporary left behind
    assert len(ESC50(root=str(root), download=True, url="file:///does/not/matter")) == 20  # present: no download


def test_esc50_incomplete_download_leaves_nothing(tmp_path: Path) -> None:
    archive = build_zip(tmp_path)
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        kept = {name: zipped.read(name) for name in names if not name.endswith("1-1000-A-0.wav")}
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in kept.items():
            zipped.writestr(name, data)
    root = tmp_path / "data" / "ESC-50-master"
    with pytest.raises(DataFormatError, match="incomplete download"):
        ESC50(root=str(root), download=True, url=archive.as_uri())
    assert list((tmp_path / "data").iterdir()) == []


def test_audio_folder_from_subfolders_has_stratified_round_robin_folds(tmp_path: Path) -> None:
    for label, name in enumerate(("b", "a")):
        for i in range(7):
            write_pcm_wav(tmp_path / "root" / name / f"{i}.wav", tone_clip(300.0 + 100 * label, 8000, 400), 8000)
    ds = AudioFolder(root=str(tmp_path / "root"), sample_rate=8000, clip_seconds=0.1)
    assert ds.class_names == ["a", "b"] and len(ds) == 14
    assert [r.fold for r in ds.records if r.label == 0] == [1, 2, 3, 4, 5, 1, 2]
    waveform, _ = ds[0]
    assert waveform.shape == (400,)  # its own length: clip_seconds cuts, it never pads
    cut = AudioFolder(root=str(tmp_path / "root"), sample_rate=8000, clip_seconds=0.02)
    assert cut[0][0].shape == (160,)


def test_audio_folder_from_csv_with_folds_and_coordinates(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for i in range(4):
        write_pcm_wav(root / "clips" / f"{i}.wav", tone_clip(500.0, 8000, 400), 8000)
    (root / "labels.csv").write_text(
        "filepath,label,fold,lat,lon\nclips/0.wav,owl,1,52.5,13.4\nclips/1.wav,owl,2,,\n"
        "clips/2.wav,frog,1,1.0,2.0\nclips/3.wav,frog,2,3.0,4.0\n"
    )
    ds = AudioFolder(root=str(root), csv_file="labels.csv", sample_rate=8000, folds=[1])
    assert ds.class_names == ["frog", "owl"] and [r.category for r in ds.records] == ["owl", "frog"]
    assert ds.records[0].lat == 52.5 and ds.records[0].lon == 13.4
    (root / "bad.csv").write_text("path,label\nclips/0.wav,owl\n")
    with pytest.raises(DataFormatError, match="bad.csv: missing column.*filepath"):
        AudioFolder(root=str(root), csv_file="bad.csv")


def test_nothing_is_written_to_the_data_folder(tmp_path: Path) -> None:
    root = write_esc50_folder(tmp_path / "ESC-50-master")
    before = {p for p in root.rglob("*")}
    ds = ESC50(root=str(root))
    for i in range(len(ds)):
        ds[i]
    assert {p for p in root.rglob("*")} == before and ds.cache is not None and ds.cache.directory.is_dir()


def test_literal_defaults_match_the_named_constants() -> None:
    import inspect

    from components.data.esc50 import ESC50_URL
    from components.transforms.kaldi import ESC50_FBANK_MEAN, ESC50_FBANK_STD, KaldiFbank

    assert inspect.signature(ESC50).parameters["url"].default == ESC50_URL
    params = inspect.signature(KaldiFbank).parameters
    assert (params["mean"].default, params["std"].default) == (ESC50_FBANK_MEAN, ESC50_FBANK_STD)
