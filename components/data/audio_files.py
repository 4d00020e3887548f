"""Shared machinery of file-backed audio data sets: header checks, bad-file policy, cache."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from components.data.audio_io import (
    AudioFileError,
    DataFormatError,
    WaveformCache,
    check_duration,
    default_audio_cache_dir,
    load_audio,
    probe_audio,
)
from components.data.base import Record, SignalDataset
from components.errors import UsageError


class AudioFileChangedError(UsageError):
    """A file that was readable when the data set opened and is not any more (deleted,
    truncated or replaced mid-run): a user error, one line naming the file (exit 2).

    A DataLoader worker's exception reaches the main process rebuilt as this class from a
    "Caught ... in DataLoader worker process N. Original Traceback ..." text; the constructor
    keeps only the original message, its last line.
    """

    def __init__(self, message: str) -> None:
        if "\nOriginal Traceback" in message:
            last = message.rstrip().rsplit("\n", 1)[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


class AudioFileDataset(SignalDataset):
    """Records whose keys are WAV paths; ``ds[i]`` decodes (or reads from the cache) at ``sample_rate``.

    Subclasses build ``records`` and ``class_names`` and then call ``check_files()``.
    """

    signal_kind = "audio"

    def __init__(
        self,
        root: str,
        sample_rate: int,
        clip_seconds: float | None,
        skip_bad_files: bool,
        cache: bool,
        cache_dir: str | None,
    ) -> None:
        super().__init__()
        if sample_rate <= 0:
            raise ValueError(
                f"{type(self).__name__}: sample_rate must be positive, got {sample_rate}"
            )
        if clip_seconds is not None and clip_seconds <= 0:
            raise ValueError(
                f"{type(self).__name__}: clip_seconds must be positive or None, got {clip_seconds}"
            )
        self.root = Path(root)
        self.sample_rate = sample_rate
        self.clip_samples = (
            None if clip_seconds is None else int(round(clip_seconds * sample_rate))
        )
        self.skip_bad_files = skip_bad_files
        self.skipped_files: list[str] = []  # at opening, and (per process) mid-run
        self.cache: WaveformCache | None = None
        if cache:
            # Under the user cache directory, one folder per data root (never in the data
            # folder); ``cache_dir`` overrides it.
            self.cache = WaveformCache(
                cache_dir if cache_dir is not None else default_audio_cache_dir(root)
            )

    def check_files(self) -> None:
        """Check every file's header once; raise one error listing bad files, or skip them."""
        good: list[Record] = []
        bad_keys: list[str] = []
        problems: list[str] = []
        for record in self.records:
            try:
                check_duration(record.key, probe_audio(record.key))
            except AudioFileError as error:
                bad_keys.append(record.key)
                problems.append(str(error))
                continue
            good.append(record)
        if not problems:
            return
        if not self.skip_bad_files:
            shown = "\n  ".join(problems[:10])
            more = (
                f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            )
            raise AudioFileError(
                f"{type(self).__name__} at {self.root}: {len(problems)} unreadable audio file(s):\n  {shown}{more}\n"
                "Fix or remove them, or pass skip_bad_files=True to leave them out."
            )
        self.skipped_files = bad_keys
        warnings.warn(
            f"{type(self).__name__}: skipped {len(problems)} unreadable audio file(s): "
            + "; ".join(problems[:10]),
            stacklevel=3,
        )
        self.records = good

    def load(self, index: int) -> torch.Tensor:
        """The clip at its own length, cut to ``clip_seconds`` when set (never padded to it:
        the transform makes the model's window, from real audio only)."""
        key = self.records[index].key
        try:
            waveform = load_audio(key, self.sample_rate, self.cache)
        except (AudioFileError, OSError) as error:
            problem = (
                str(error)
                if isinstance(error, AudioFileError)
                else f"{key}: cannot be read ({error.strerror or error})"
            )
            raise AudioFileChangedError(
                f"{' '.join(problem.split())} (it was readable when the data set was opened:"
                " deleted or changed during the run?); restore it and resume with --resume,"
                " or pass --data.skip_bad_files to skip such files"
            ) from None
        if self.clip_samples is not None:
            waveform = waveform[..., : self.clip_samples]
        return waveform

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(clip, label)``. With ``skip_bad_files``, a file that became unreadable since the
        data set opened is skipped (warned about once, added to ``skipped_files``) and the
        next readable record stands in for it, with its own label, so a batch keeps its size.
        """
        count = len(self.records)
        if not self.skip_bad_files or not -count <= index < count:
            return super().__getitem__(index)
        index %= count
        gone = set(self.skipped_files)
        for offset in range(count):
            candidate = (index + offset) % count
            key = self.records[candidate].key
            if key in gone:
                continue
            try:
                return super().__getitem__(candidate)
            except AudioFileChangedError as error:
                self.skipped_files.append(key)
                gone.add(key)
                warnings.warn(
                    f"{type(self).__name__}: skipped a file that became unreadable mid-run"
                    f" ({len(gone)} skipped in this process so far): "
                    + str(error).split(" (it was readable", 1)[0],
                    stacklevel=2,
                )
        raise AudioFileChangedError(
            f"{type(self).__name__} at {self.root}: none of its {count} files can be read any more"
        )


def resolve_under(root: Path, name: str) -> str:
    """``name`` as a path: absolute as given, else relative to ``root``."""
    path = Path(name)
    return os.fspath(path if path.is_absolute() else root / path)


def read_csv_rows(
    path: str | os.PathLike[str], columns: Sequence[str], expected: str
) -> list[dict[str, str]]:
    """The rows of a CSV file with a header; a missing column of ``columns`` is a ``DataFormatError``.

    ``expected`` describes the header in the error (e.g. ``"filepath,label[,fold]"``).
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [
            column for column in columns if column not in (reader.fieldnames or [])
        ]
        if missing:
            raise DataFormatError(
                f"{path}: missing column(s) {', '.join(missing)}; expected {expected}"
            )
        return list(reader)


__all__ = [
    "AudioFileChangedError",
    "AudioFileDataset",
    "read_csv_rows",
    "resolve_under",
]
