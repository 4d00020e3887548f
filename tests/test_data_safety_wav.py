"""Issue 11, items 3-5: odd WAV files, found when the data set is opened.

Fixtures are written at test time with the standard library (`wave`, `struct`) and, for
WAVE_FORMAT_EXTENSIBLE, also with `sox` where it is installed.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch

from components.contracts.data import tone_clip, write_pcm_wav
from components.data import AudioFileError, AudioFolder, read_wav


def folder_with(tmp_path: Path, bad: dict[str, tuple[int, int]]) -> Path:
    """A class-per-folder tree: one good 0.5 s clip per class, plus `bad` {name: (frames, rate)}."""
    root = tmp_path / "audio"
    for name in ("cat", "dog"):
        write_pcm_wav(root / name / "good.wav", tone_clip(440.0, 16000, 8000), 16000)
    for name, (frames, rate) in bad.items():
        write_pcm_wav(root / "cat" / name, tone_clip(440.0, rate, frames) if frames else torch.zeros(0), rate)
    return root


# ---------------------------------------------------------------- item 3: zero frames, too short
@pytest.mark.parametrize(
    ("frames", "rate", "problem"),
    [(0, 16000, "holds no audio"), (1, 16000, "too short"), (399, 16000, "too short"), (100, 8000, "too short")],
)
def test_a_clip_shorter_than_one_frame_is_a_bad_file_named_when_the_data_set_opens(tmp_path: Path, frames: int, rate: int, problem: str) -> None:
    root = folder_with(tmp_path, {"short.wav": (frames, rate)})
    with pytest.raises(AudioFileError, match=problem) as error:
        AudioFolder(root=str(root), cache=False, clip_seconds=None)
    assert str(root / "cat" / "short.wav") in str(error.value) and "skip_bad_files" in str(error.value)


def test_short_and_empty_clips_are_skippable(tmp_path: Path) -> None:
    root = folder_with(tmp_path, {"empty.wav": (0, 16000), "blip.wav": (10, 16000)})
    with pytest.warns(UserWarning, match="skipped 2"):
        data = AudioFolder(root=str(root), cache=False, clip_seconds=None, skip_bad_files=True)
    assert sorted(Path(key).name for key in data.skipped_files) == ["blip.wav", "empty.wav"]
    assert len(data) == 2 and all(data[i][0].numel() == 8000 for i in range(len(data)))


def test_one_frame_long_clip_is_accepted(tmp_path: Path) -> None:
    root = folder_with(tmp_path, {"frame.wav": (400, 16000)})  # exactly 25 ms
    assert len(AudioFolder(root=str(root), cache=False, clip_seconds=None)) == 3


def test_a_zero_frame_wav_is_refused_by_the_reader_too(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    write_pcm_wav(path, torch.zeros(0), 16000)
    with pytest.raises(AudioFileError, match="holds no audio") as error:
        read_wav(path)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------- item 4: WAVE_FORMAT_EXTENSIBLE
PCM_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def write_extensible_wav(path: Path, samples: torch.Tensor, rate: int, bits: int, is_float: bool = False) -> None:
    """``[C, N]`` samples in [-1, 1) as a WAVE_FORMAT_EXTENSIBLE file, with `struct` only."""
    channels, frames = samples.shape
    width = bits // 8
    if is_float:
        data = struct.pack(f"<{channels * frames}f", *samples.T.reshape(-1).tolist())
    else:
        scale = 1 << (bits - 1)
        ints = (samples.T.reshape(-1) * scale).round().clamp(-scale, scale - 1).to(torch.int64).tolist()
        data = b"".join(v.to_bytes(width, "little", signed=True) for v in ints)
    sub_format = struct.pack("<H", 3 if is_float else 1) + PCM_GUID_TAIL
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * channels * width, channels * width, bits, 22, bits, (1 << channels) - 1) + sub_format
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 5) + b"INFOx\x00" + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def quantised_tone(channels: int, bits: int) -> torch.Tensor:
    """A tone already on the grid of `bits`-bit PCM, so every format holds it exactly."""
    tone = torch.stack([tone_clip(440.0 * (c + 1), 16000, 800).reshape(-1) for c in range(channels)])
    scale = float(1 << (bits - 1))
    return (tone * scale).round() / scale


@pytest.mark.parametrize(("bits", "is_float"), [(16, False), (24, False), (32, False), (32, True)])
@pytest.mark.parametrize("channels", [1, 3])
def test_extensible_wav_written_with_struct_is_read(tmp_path: Path, bits: int, is_float: bool, channels: int) -> None:
    samples = quantised_tone(channels, 16)
    path = tmp_path / "x.wav"
    write_extensible_wav(path, samples, 16000, bits, is_float)
    decoded, rate = read_wav(path)
    assert rate == 16000 and decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, samples.mean(0), atol=1e-6, rtol=0)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
@pytest.mark.parametrize("options", [["-b", "24"], ["-b", "32"], ["-e", "floating-point", "-b", "32"], ["-b", "16"]])
@pytest.mark.parametrize("channels", [1, 4])
def test_extensible_wav_written_by_sox_is_read(tmp_path: Path, options: list[str], channels: int) -> None:
    samples = quantised_tone(channels, 16)
    source = tmp_path / "source.wav"
    write_pcm_wav(source, samples, 16000, 2)
    target = tmp_path / "sox.wav"
    subprocess.run(["sox", str(source), *options, str(target)], check=True, capture_output=True)
    tag = struct.unpack("<H", target.read_bytes()[20:22])[0]
    if "floating-point" not in options and (options != ["-b", "16"] or channels > 2):
        assert tag == 0xFFFE  # what the issue is about: sox writes EXTENSIBLE for these
    decoded, rate = read_wav(target)
    assert rate == 16000
    torch.testing.assert_close(decoded, samples.mean(0), atol=1e-6, rtol=0)
    root = tmp_path / "audio"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        shutil.copy(target, root / name / "clip.wav")
    assert len(AudioFolder(root=str(root), cache=False, clip_seconds=None)) == 2  # the data set opens it


def test_extensible_with_an_unknown_sub_format_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    write_extensible_wav(path, quantised_tone(1, 16), 16000, 16)
    data = bytearray(path.read_bytes())
    data[44:46] = struct.pack("<H", 2)  # KSDATAFORMAT_SUBTYPE_ADPCM
    path.write_bytes(bytes(data))
    with pytest.raises(AudioFileError, match="format tag 2") as error:
        read_wav(path)
    assert str(path) in str(error.value) and "sox" in str(error.value)


# ---------------------------------------------------------------- item 5: rates, links, layout
def header_with_rate(path: Path, rate: int) -> None:
    """A 1.5 s 16 kHz clip whose header then claims `rate` (byte rate to match)."""
    write_pcm_wav(path, tone_clip(440.0, 16000, 24000), 16000)
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", min(rate * 2, 2**32 - 1))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("rate", [1, 999, 768001, 4_000_000_000])
def test_an_absurd_sample_rate_is_a_bad_file(tmp_path: Path, rate: int) -> None:
    root = folder_with(tmp_path, {})
    header_with_rate(root / "cat" / "odd.wav", rate)
    with pytest.raises(AudioFileError, match="implausible sample rate") as error:
        AudioFolder(root=str(root), cache=False, clip_seconds=None)
    assert str(root / "cat" / "odd.wav") in str(error.value) and f"{rate} Hz" in str(error.value)
    with pytest.warns(UserWarning, match="skipped 1"):
        data = AudioFolder(root=str(root), cache=True, clip_seconds=None, skip_bad_files=True)
    assert [Path(key).name for key in data.skipped_files] == ["odd.wav"] and len(data) == 2
    assert not (root / ".sigmae-cache").exists() or not any((root / ".sigmae-cache").iterdir())


@pytest.mark.parametrize("rate", [1000, 768000])
def test_the_edges_of_the_sample_rate_range_are_accepted(tmp_path: Path, rate: int) -> None:
    root = folder_with(tmp_path, {})
    header_with_rate(root / "cat" / "edge.wav", rate)
    assert len(AudioFolder(root=str(root), cache=False, clip_seconds=None)) == 3


def test_dangling_and_looping_links_are_counted_as_skipped_files(tmp_path: Path) -> None:
    root = folder_with(tmp_path, {})
    os.symlink(root / "cat" / "gone.wav", root / "cat" / "dangling.wav")
    os.symlink(root / "cat" / "loop.wav", root / "cat" / "loop.wav")
    os.symlink(root / "cat", root / "cat" / "again")  # a folder loop: not followed
    with pytest.raises(AudioFileError, match="symbolic link") as error:
        AudioFolder(root=str(root), cache=False, clip_seconds=None)
    assert "dangling.wav" in str(error.value) and "loop.wav" in str(error.value)
    with pytest.warns(UserWarning, match="skipped 2"):
        data = AudioFolder(root=str(root), cache=False, clip_seconds=None, skip_bad_files=True)
    assert sorted(Path(key).name for key in data.skipped_files) == ["dangling.wav", "loop.wav"] and len(data) == 2


def test_a_link_to_a_good_file_is_read(tmp_path: Path) -> None:
    root = folder_with(tmp_path, {})
    os.symlink(root / "dog" / "good.wav", root / "cat" / "linked.wav")
    assert len(AudioFolder(root=str(root), cache=False, clip_seconds=None)) == 3


def test_wav_files_without_class_folders_say_so(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for i in range(3):
        write_pcm_wav(root / f"clip{i}.WAV", tone_clip(440.0, 16000, 800), 16000)
    with pytest.raises(FileNotFoundError, match="no class sub-folders") as error:
        AudioFolder(root=str(root), cache=False)
    assert "3 .wav file(s)" in str(error.value) and "csv_file" in str(error.value) and str(root) in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .wav files found"):
        AudioFolder(root=str(tmp_path / "empty"), cache=False)
