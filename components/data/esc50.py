"""ESC-50: 2,000 five-second environmental sound clips in 50 classes, 5 folds.

Layout (the official repository's ``master.zip``)::

    ESC-50-master/meta/esc50.csv     filename,fold,target,category,esc10,src_file,take
    ESC-50-master/audio/*.wav        5 s, 44.1 kHz, mono, 16-bit PCM

Evaluation is 5-fold cross-validation over the predefined folds (``leave_one_fold_out``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from components.data.audio_files import AudioFileDataset, read_csv_rows
from components.data.audio_io import DataFormatError
from components.data.base import (
    Record,
    check_split_settings,
    filter_folds,
    split_records,
)
from components.data.download import download_with_progress, safe_extract
from components.registry import data_registry

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/refs/heads/master.zip"
ESC50_CLIPS = 2000
ESC50_COLUMNS = ("filename", "fold", "target", "category")


def download_esc50(root: str | os.PathLike[str], url: str = ESC50_URL) -> Path:
    """Fetch and unpack ESC-50 so that ``root`` is the ``ESC-50-master`` folder; return it.

    Everything happens in a temporary folder beside ``root``, which is renamed into place only
    after every clip listed in ``meta/esc50.csv`` has arrived (2,000 for the official URL).
    """
    root = Path(root)
    if (root / "meta" / "esc50.csv").is_file():
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists but holds no meta/esc50.csv; remove it or choose another root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".esc50-download-", dir=root.parent))
    try:
        archive = work / "master.zip"
        download_with_progress(url, archive, f"downloading ESC-50 from {url}")
        safe_extract(archive, work / "unpacked")
        found = [
            meta.parent.parent for meta in (work / "unpacked").glob("*/meta/esc50.csv")
        ]
        found += (
            [work / "unpacked"]
            if (work / "unpacked" / "meta" / "esc50.csv").is_file()
            else []
        )
        if len(found) != 1:
            raise DataFormatError(
                f"{url}: the archive holds no single ESC-50 folder with meta/esc50.csv"
            )
        listed = len(read_esc50_csv(found[0] / "meta" / "esc50.csv"))
        arrived = sum(1 for _ in (found[0] / "audio").glob("*.wav"))
        expected = ESC50_CLIPS if url == ESC50_URL else listed
        if arrived != expected or listed != expected:
            raise DataFormatError(
                f"{url}: incomplete download: {arrived} clips arrived, the CSV lists {listed}, expected {expected}"
            )
        if root.exists():
            root.rmdir()  # empty, checked above
        os.replace(found[0], root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def read_esc50_csv(path: Path) -> list[dict[str, str]]:
    try:
        rows = read_csv_rows(
            path, ESC50_COLUMNS, f"a header with {', '.join(ESC50_COLUMNS)}"
        )
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: not a text CSV file") from None
    for line, row in enumerate(rows, start=2):
        try:
            int(row["fold"]), int(row["target"])
        except (TypeError, ValueError):
            raise DataFormatError(
                f"{path}:{line}: fold and target must be integers, got {row['fold']!r}, {row['target']!r}"
            ) from None
    return rows


@data_registry.register("esc50", version="1.0")
class ESC50(AudioFileDataset):
    """ESC-50 clips as mono waveforms at ``sample_rate`` (5 s each), labelled by ``target``.

    ``class_names`` are the categories ordered by target. ``esc10=True`` keeps the ESC-10
    subset (labels renumbered 0-9 in target order). A CSV row whose file is missing is an
    error unless ``skip_missing=True``; unreadable files likewise with ``skip_bad_files``.
    ``split="folds"`` keeps the official five folds (the published protocol; clips cut from
    one recording share a fold); ``random``/``stratified``/``holdout_fraction`` re-deal them
    as ``audio_folder`` does, and ``group_pattern='^\\d+-(\\d+[A-Z]?)-'`` keeps a source
    recording's clips together.

    Args:
        root: The ESC-50-master folder of the ESC-50 download (holds meta/esc50.csv and
            audio/); --data-dir overrides it.
        sample_rate: Sample rate in Hz that every clip is resampled to; must match the
            transform's sample_rate. ESC-50 is recorded at 44.1 kHz.
        folds: Official folds (1-5) to load; None loads all five. Recipes pick their
            train and evaluation folds from these.
        download: Fetch and unpack the official zip into `root` when meta/esc50.csv is
            missing (the script's --download flag).
        esc10: Keep only the ESC-10 subset (10 classes, 400 clips; labels renumbered
            0-9).
        skip_missing: Use the clips that are there when files listed in the CSV are
            missing, instead of stopping with an error.
        skip_bad_files: Skip files that cannot be decoded (each one is reported) instead
            of stopping with an error.
        cache: Keep decoded waveforms in an on-disk cache so later epochs and runs skip
            decoding; turn off when disk space is short.
        cache_dir: Folder of the decoded-audio cache; None uses the user cache
            directory ($SIGMAE_CACHE_DIR or ~/.cache/sigmae-gen/audio/<hash of root>).
        url: Where --download fetches the ESC-50 zip from; point it at a mirror when
            GitHub is unreachable.
        split: `folds` keeps the official five folds (the published protocol);
            `random`/`stratified` re-deal the clips into `num_folds` folds.
        num_folds: Number of folds for a `random`/`stratified` split (the official split
            always has 5).
        group_pattern: Regex over the file name whose first group (or whole match) names
            a group kept in one fold, e.g. the freesound clip id, so clips cut from one
            recording stay together; None deals files one by one.
        holdout_fraction: Fraction (0-1) of the data re-dealt into a held-out fold 2
            (fold 1 trains); None keeps `num_folds` folds.
        split_seed: Seed of the `random`/`stratified` shuffle; change it to draw another
            split.
    """

    def __init__(
        self,
        root: str = "data/ESC-50-master",
        sample_rate: int = 16000,
        folds: list[int] | None = None,
        download: bool = False,
        esc10: bool = False,
        skip_missing: bool = False,
        skip_bad_files: bool = False,
        cache: bool = True,
        cache_dir: str | None = None,
        url: str = "https://github.com/karolpiczak/ESC-50/archive/refs/heads/master.zip",  # ESC50_URL
        split: Literal["folds", "random", "stratified"] = "folds",
        num_folds: int = 5,
        group_pattern: str | None = None,
        holdout_fraction: float | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__(root, sample_rate, None, skip_bad_files, cache, cache_dir)
        pattern = check_split_settings(
            "esc50", split, num_folds, holdout_fraction, group_pattern
        )
        meta = self.root / "meta" / "esc50.csv"
        if not meta.is_file() and download:
            download_esc50(self.root, url)
        if not meta.is_file():
            raise FileNotFoundError(
                f"ESC-50 not found: {meta} does not exist. Run with --download (download=True) to fetch it,"
                f" or download {ESC50_URL}, unzip it and point --data-dir (root) at the ESC-50-master folder."
            )
        rows = read_esc50_csv(meta)
        if esc10:
            rows = [
                row for row in rows if row.get("esc10", "").strip().lower() == "true"
            ]
        names_by_target: dict[int, str] = {}
        for row in rows:
            names_by_target.setdefault(int(row["target"]), row["category"])
        targets = sorted(names_by_target)
        if not esc10 and targets != list(range(len(targets))):
            raise DataFormatError(
                f"{meta}: targets must run from 0 without gaps, found {targets}"
            )
        label_of = {target: label for label, target in enumerate(targets)}
        self.class_names = [names_by_target[target] for target in targets]
        records = [
            Record(
                str(self.root / "audio" / row["filename"]),
                label_of[int(row["target"])],
                row["category"],
                int(row["fold"]),
            )
            for row in rows
        ]
        records = split_records(
            records,
            split,
            num_folds=num_folds,
            seed=split_seed,
            holdout_fraction=holdout_fraction,
            group_pattern=pattern,
        )
        self.records = filter_folds(records, folds, str(meta))
        # the folds the CSV lists, whether or not their clips are here (kfold reports the absent)
        self.listed_folds = sorted({record.fold for record in self.records})
        missing = [
            record.key for record in self.records if not os.path.isfile(record.key)
        ]
        if missing and not skip_missing:
            raise FileNotFoundError(
                f"{meta} lists {len(missing)} clip(s) whose files are missing under {self.root / 'audio'}"
                f" (first: {Path(missing[0]).name}); re-download with --download into an empty folder,"
                " or pass skip_missing=True to use the clips that are there"
            )
        if missing:
            absent = set(missing)
            self.records = [
                record for record in self.records if record.key not in absent
            ]
        self.missing_files = missing
        self.check_files()


__all__ = ["ESC50", "ESC50_URL", "download_esc50", "read_esc50_csv"]
