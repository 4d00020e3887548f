"""FLAC, OGG/Vorbis and MP3 through the real ``soundfile`` package (a dev dependency), and the
one path where it is missing. PCM WAV stays standard-library only.

Files are written with soundfile (libsndfile) itself, the way other tools write them, and
read back through the data sets, so decoding, the header probe of ``check_files`` and the
folder listing are exercised end to end.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from components.contracts.data import write_pcm_wav
from components.data import AudioFolder
from components.data.audio_io import AudioFileError, probe_audio, read_audio
from components.transforms.resample import resample

soundfile = pytest.importorskip("soundfile")  # in the dev extra: make venv installs it
np = pytest.importorskip("numpy")

RATE = 22050  # the data sets resample to 16 kHz


def chirp(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """``[C, N]`` float32 in [-0.5, 0.5]: a rising chirp per channel (distinct phases)."""
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    waves = [0.5 * torch.sin(2 * math.pi * (300 + 40 * seed + 100 * c) * t * (1 + t)) for c in range(channels)]
    return torch.stack(waves).float()


def write_with_soundfile(path: Path, samples: torch.Tensor, rate: int, fmt: str, subtype: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples.T.numpy(), rate, format=fmt, subtype=subtype)
    return path


FORMATS = {  # suffix: (libsndfile format, subtype, max abs error after decoding)
    ".flac": ("FLAC", "PCM_16", 1e-4),  # lossless but for 16-bit quantisation
    ".ogg": ("OGG", "VORBIS", None),  # lossy: compared by correlation
    ".mp3": ("MP3", "MPEG_LAYER_III", None),
}


def similar(decoded: torch.Tensor, original: torch.Tensor, max_delay: int = 2000) -> float:
    """Peak normalised cross-correlation over codec delays of 0..max_delay samples (FFT)."""
    n = min(decoded.numel(), original.numel())
    a, b = decoded[:n].double(), original[:n].double()
    a, b = a - a.mean(), b - b.mean()
    size = 2 * n
    correlation = torch.fft.irfft(torch.fft.rfft(a, size) * torch.fft.rfft(b, size).conj(), size)
    return float(correlation[: max_delay + 1].max() / (a.norm() * b.norm()))


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_compressed_file_decodes_to_the_written_waveform(tmp_path: Path, suffix: str) -> None:
    fmt, subtype, tolerance = FORMATS[suffix]
    original = chirp(0.5, RATE, channels=2)
    path = write_with_soundfile(tmp_path / f"clip{suffix.upper()}", original, RATE, fmt, subtype)  # suffix case-blind
    info = probe_audio(path)
    assert (info.sample_rate, info.channels) == (RATE, 2)
    waveform, rate = read_audio(path)
    assert rate == RATE and waveform.dtype == torch.float32 and waveform.dim() == 1
    mono = original.mean(0)
    if tolerance is not None:
        assert waveform.numel() == info.num_frames == mono.numel()
        torch.testing.assert_close(waveform, mono, atol=tolerance, rtol=0)
    else:  # lossy codecs may pad or drop a frame's worth of samples and shift by their delay
        assert abs(waveform.numel() - mono.numel()) < 0.1 * RATE
        assert similar(waveform, mono) > 0.95


def test_audio_folder_lists_and_reads_flac_ogg_mp3_beside_wav(tmp_path: Path) -> None:
    root = tmp_path / "audio"
    originals: dict[str, torch.Tensor] = {}
    for label, name in enumerate(("bird", "car")):
        clip = chirp(0.4, RATE, seed=label)
        originals[name] = clip[0]
        write_with_soundfile(root / name / "a.flac", clip, RATE, "FLAC", "PCM_24")
        write_with_soundfile(root / name / "b.ogg", clip, RATE, "OGG", "VORBIS")
        write_with_soundfile(root / name / "c.mp3", clip, RATE, "MP3", "MPEG_LAYER_III")
        write_pcm_wav(root / name / "d.wav", clip, RATE)
    (root / "car" / "notes.txt").write_text("not audio")  # other suffixes stay out
    ds = AudioFolder(root=str(root), sample_rate=16000, num_folds=2, cache_dir=str(tmp_path / "cache"))
    assert ds.class_names == ["bird", "car"]
    assert sorted(Path(r.key).name for r in ds.records) == sorted(["a.flac", "b.ogg", "c.mp3", "d.wav"] * 2)
    for index, record in enumerate(ds.records):
        signal, label = ds[index]
        expected = resample(originals[record.category], RATE, 16000)
        assert label == record.label and signal.dtype == torch.float32
        assert abs(signal.numel() - expected.numel()) < 1600, record.key  # within 0.1 s
        if record.key.endswith((".flac", ".wav")):
            torch.testing.assert_close(signal, expected, atol=2e-3, rtol=0)  # 16/24-bit PCM
        else:
            assert similar(signal, expected, 1200) > 0.9, record.key
    cached = AudioFolder(root=str(root), sample_rate=16000, num_folds=2, cache_dir=str(tmp_path / "cache"))
    flac = next(i for i, r in enumerate(cached.records) if r.key.endswith(".flac"))
    torch.testing.assert_close(cached[flac][0], ds[flac][0])  # the decoded-clip cache serves FLAC too


def test_bad_compressed_files_are_named_or_skipped(tmp_path: Path) -> None:
    root = tmp_path / "audio"
    good = write_with_soundfile(root / "a" / "good.flac", chirp(0.3, RATE), RATE, "FLAC", "PCM_16")
    data = good.read_bytes()
    (root / "a" / "cut.flac").write_bytes(data[: len(data) // 2])  # a download cut short
    (root / "a" / "junk.ogg").write_bytes(b"OggS" + bytes(200))
    (root / "a" / "empty.mp3").write_bytes(b"")
    with pytest.raises(AudioFileError) as error:
        AudioFolder(root=str(root), sample_rate=16000, num_folds=1, cache=False)
    message = str(error.value)
    assert "3 unreadable audio file(s)" in message
    assert f"{root / 'a' / 'cut.flac'}: truncated" in message
    assert f"{root / 'a' / 'junk.ogg'}: cannot be decoded by libsndfile" in message
    assert f"{root / 'a' / 'empty.mp3'}: the file is empty" in message
    with pytest.warns(UserWarning, match="skipped 3 unreadable"):
        ds = AudioFolder(root=str(root), sample_rate=16000, num_folds=1, cache=False, skip_bad_files=True)
    assert [Path(r.key).name for r in ds.records] == ["good.flac"] and len(ds.skipped_files) == 3


def test_without_soundfile_one_line_names_the_file_and_wav_still_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one test of the missing-package path: ``import soundfile`` fails as if not installed."""
    root = tmp_path / "audio"
    write_pcm_wav(root / "a" / "x.wav", chirp(0.3, RATE)[0], RATE)
    write_with_soundfile(root / "b" / "y.flac", chirp(0.3, RATE), RATE, "FLAC", "PCM_16")
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(ModuleNotFoundError) as error:
        AudioFolder(root=str(root), sample_rate=16000, num_folds=1, cache=False)
    message = str(error.value)
    assert message.startswith(f"{root / 'b' / 'y.flac'}: reading FLAC files needs the soundfile package")
    assert "pip install soundfile" in message and "\n" not in message
    (root / "b" / "y.flac").unlink()
    ds = AudioFolder(root=str(root), sample_rate=16000, num_folds=1, cache=False)  # PCM WAV: stdlib only
    assert ds[0][0].numel() == int(0.3 * 16000)
