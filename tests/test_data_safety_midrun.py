"""Issue 11, item 6 (rest): a WAV file that becomes unreadable after the data set was opened.

Deleted or truncated mid-run (a sync client, a clean-up job, a full disk), the file is named in
one line, exit 2, also when a DataLoader worker met it (the worker's traceback text does not
reach the user); with `skip_bad_files` it is skipped, counted and warned about, and training
goes on with the next readable clip in its place.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from components.contracts.data import tone_clip, write_pcm_wav
from components.data.audio_files import AudioFileChangedError
from components.data.audio_folder import AudioFolder
from components.runtime import run_pipeline
from test_runtime_helpers import ALL_STEPS, Config, make_pipeline

PRETRAIN = tuple(step for step in ALL_STEPS if step.section == "pretrain")


class VanishingFolder(AudioFolder):
    """An audio folder whose last `damage` files are deleted or truncated right after it opens."""

    damage: tuple[str, int] = ("delete", 0)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        how, count = self.damage
        for record in self.records[len(self.records) - count :]:
            if how == "delete":
                os.unlink(record.key)
            else:
                with open(record.key, "r+b") as handle:
                    handle.truncate(100)


@dataclass
class FolderDataConfig:
    root: str = "data/missing"
    sample_rate: int = 8000
    clip_seconds: float | None = None
    skip_bad_files: bool = False
    cache: bool = False
    folds: list[int] | None = None


@dataclass
class FolderConfig(Config):
    data: FolderDataConfig = field(default_factory=FolderDataConfig)


def tone_folder(root: Path) -> Path:
    for label in range(4):
        for i in range(8):
            write_pcm_wav(root / f"class{label}" / f"clip{i}.wav", tone_clip(400.0 * (label + 1) + 7 * i, 8000, 2048), 8000)
    return root


def run(root: Path, out_dir: Path, *extra: str) -> int:
    torch.set_num_threads(1)
    argv = ["--data-dir", str(root), "--out-dir", str(out_dir), "--steps", "4", *extra]
    return run_pipeline(make_pipeline(PRETRAIN, data=VanishingFolder), FolderConfig, argv)


@pytest.fixture(autouse=True)
def no_damage():
    yield
    VanishingFolder.damage = ("delete", 0)


@pytest.mark.parametrize("how", ["delete", "truncate"])
@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_gone_bad_mid_run_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str, workers: int) -> None:
    root = tone_folder(tmp_path / "audio")
    VanishingFolder.damage = (how, 8)
    code = run(root, tmp_path / "run", "--pretrain.num_workers", str(workers))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and ".wav" in lines[0] and str(root) in lines[0], err
    assert "--data.skip_bad_files" in lines[0] and "Traceback" not in err and "DataLoader worker" not in err


@pytest.mark.parametrize("workers", [0, 2])
def test_with_skip_bad_files_the_run_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: int) -> None:
    root = tone_folder(tmp_path / "audio")
    VanishingFolder.damage = ("delete", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = run(root, tmp_path / "run", "--pretrain.num_workers", str(workers), "--data.skip_bad_files")
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("how", ["delete", "truncate"])
def test_skipped_files_are_counted_warned_and_stood_in_for(tmp_path: Path, how: str) -> None:
    root = tone_folder(tmp_path / "audio")
    VanishingFolder.damage = (how, 3)
    data = VanishingFolder(root=str(root), sample_rate=8000, clip_seconds=None, skip_bad_files=True, cache=True, cache_dir=str(tmp_path / "cache"))
    gone = [record.key for record in data.records[-3:]]
    with pytest.warns(UserWarning) as caught:
        items = [data[i] for i in range(len(data))]
    assert len(items) == len(data) and all(signal.shape == (2048,) for signal, _ in items)
    assert data.skipped_files == gone
    messages = [str(w.message) for w in caught]
    assert all(any(key in message for message in messages) for key in gone)
    assert all("\n" not in message for message in messages)
    # A stand-in is the next readable clip (wrapping round), with its own label.
    assert items[-1][1] == data.records[0].label and torch.equal(items[-1][0], items[0][0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file already known to be gone is not warned about again
        assert data[len(data) - 1][1] == data.records[0].label


def test_without_skip_bad_files_the_error_names_the_file(tmp_path: Path) -> None:
    root = tone_folder(tmp_path / "audio")
    VanishingFolder.damage = ("truncate", 1)
    data = VanishingFolder(root=str(root), sample_rate=8000, clip_seconds=None, cache=False)
    with pytest.raises(AudioFileChangedError) as caught:
        data[len(data) - 1]
    message = str(caught.value)
    assert data.records[-1].key in message and "\n" not in message and "--data.skip_bad_files" in message


def test_a_worker_wrapped_message_keeps_only_the_original_line() -> None:
    wrapped = (
        "Caught AudioFileChangedError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in load\n    raise AudioFileChangedError(msg)\n'
        "__main__.AudioFileChangedError: /data/a: b.wav: cannot be read\n"
    )
    assert str(AudioFileChangedError(wrapped)) == "/data/a: b.wav: cannot be read"
