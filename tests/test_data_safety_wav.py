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
