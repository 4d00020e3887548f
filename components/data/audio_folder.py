"""A generic labelled audio folder: one sub-folder per class, or a CSV listing the clips.

``root/<class>/**/*.wav`` gives classes in sorted order and a deterministic, class-stratified
split into ``num_folds`` folds (round-robin over each class's sorted files). A CSV
(``filepath,label[,fold][,lat,lon]``; paths relative to ``root``) sets the files, labels and
optionally the folds itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from components.data.audio_files import (
    AudioFileDataset,
    read_csv_rows,
    resolve_under,
)
from components.data.audio_io import AUDIO_SUFFIXES, DataFormatError
from components.data.base import (
    Record,
    check_split_settings,
    filter_folds,
    split_records,
)
from components.registry import data_registry


def csv_float(value: str | None, where: str, column: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise DataFormatError(
            f"{where}: column {column} must be a number, got {value!r}"
        ) from None


@data_registry.register("audio_folder", version="1.0")
class AudioFolder(AudioFileDataset):
    """Labelled WAV files from a class-per-folder tree or a CSV, at ``sample_rate``.

    Every clip keeps its own length; ``clip_seconds`` cuts longer ones (it never pads: the
    transform makes the model's window from real audio, tiling or padding short clips).

    Folds: ``split="folds"`` (the default) keeps a CSV's ``fold`` column, or deals each
    class's files, sorted by path, round-robin into ``num_folds`` folds: deterministic, but
    neighbouring files (often one speaker's or one recording's takes) land in different
    folds. ``random`` / ``stratified`` deal a ``split_seed``-seeded shuffle instead
    (stratified: per class). ``group_pattern``, a regex over the file name (its first group,
    or the whole match, names the group: ``'^([a-z]+)_'`` for a speaker prefix), keeps every
    group in one fold, so no speaker spans train and test. ``holdout_fraction`` makes two
    folds instead of ``num_folds``: fold 1 to train on, fold 2 held out.

    Args:
        root: Folder holding one sub-folder of audio files per class, or the files a
            `csv_file` lists.
        sample_rate: Sample rate in Hz that every clip is resampled to; must match the
            transform's sample_rate.
        folds: Folds to load (e.g. [1, 2, 3]); None loads every fold. Recipes pick their
            train and evaluation folds from these.
        csv_file: CSV with columns filepath,label[,fold] (paths relative to `root`)
            listing the clips instead of the class folders; None reads the folder tree.
        num_folds: Number of folds the files are dealt into when there is no fold column
            (ignored with `holdout_fraction`).
        split: How folds are made: `folds` keeps the CSV's fold column or deals each
            class's sorted files round-robin, `random` deals a seeded shuffle into
            `num_folds` folds, `stratified` does so per class.
        group_pattern: Regex over the file name whose first group (or whole match) names
            a group kept in one fold, e.g. a speaker or source-recording prefix; None
            deals files one by one.
        holdout_fraction: Fraction (0-1) of the data re-dealt into a held-out fold 2
            (fold 1 trains); None keeps `num_folds` folds.
        split_seed: Seed of the `random`/`stratified` shuffle; change it to draw another
            split.
        clip_seconds: Longest clip in seconds: longer files are cut to it (shorter ones
            are never padded); None keeps whole files.
        skip_bad_files: Skip files that cannot be decoded (each one is reported) instead
            of stopping with an error.
        cache: Keep decoded waveforms in an on-disk cache so later epochs and runs skip
            decoding; turn off when disk space is short.
        cache_dir: Folder of the decoded-audio cache; None uses the user cache
            directory ($SIGMAE_CACHE_DIR or ~/.cache/sigmae-gen/audio/<hash of root>).
    """

    def __init__(
        self,
        root: str = "data/audio",
        sample_rate: int = 16000,
        folds: list[int] | None = None,
        csv_file: str | None = None,
        num_folds: int = 5,
        split: Literal["folds", "random", "stratified"] = "folds",
        group_pattern: str | None = None,
        holdout_fraction: float | None = None,
        split_seed: int = 0,
        clip_seconds: float | None = 10.0,
        skip_bad_files: bool = False,
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            root, sample_rate, clip_seconds, skip_bad_files, cache, cache_dir
        )
        pattern = check_split_settings(
            "audio_folder", split, num_folds, holdout_fraction, group_pattern
        )
        self.num_folds = num_folds
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"audio folder not found: {self.root}. Point --data-dir (root) at a folder with one sub-folder of"
                " .wav files per class, or with a CSV (filepath,label[,fold]) passed as csv_file"
            )
        records = (
            self.records_from_csv(resolve_under(self.root, csv_file))
            if csv_file
            else self.records_from_tree()
        )
        if not records:
            raise FileNotFoundError(self.no_records_message(bool(csv_file)))
        records = split_records(
            records,
            split,
            num_folds=num_folds,
            seed=split_seed,
            holdout_fraction=holdout_fraction,
            group_pattern=pattern,
        )
        self.records = filter_folds(records, folds, str(self.root))
        self.check_files()

    def round_robin_fold(self, position_in_class: int) -> int:
        return position_in_class % self.num_folds + 1

    def records_from_tree(self) -> list[Record]:
        classes = sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".")
        )
        self.class_names = classes
        records: list[Record] = []
        for label, name in enumerate(classes):
            # A link to a missing file, or a link loop, stays in: check_files names it
            # (and skip_bad_files counts it as skipped) instead of dropping it silently.
            files = sorted(
                path
                for path in (self.root / name).rglob("*")
                if path.suffix.lower() in AUDIO_SUFFIXES
                and (path.is_file() or path.is_symlink())
            )
            records += [
                Record(str(path), label, name, self.round_robin_fold(i))
                for i, path in enumerate(files)
            ]
        return records

    def no_records_message(self, from_csv: bool) -> str:
        """Why the folder gave no clips, and the fix."""
        if from_csv:
            return f"audio folder {self.root}: the CSV lists no files"
        loose = [
            p.name
            for p in self.root.iterdir()
            if p.suffix.lower() == ".wav" and not p.is_dir()
        ]
        if loose:
            return (
                f"audio folder {self.root}: {len(loose)} .wav file(s) lie directly in it"
                f" (e.g. {sorted(loose)[0]}), but there are no class sub-folders; move"
                " each class's files into root/<class>/, or list them in a CSV"
                " (filepath,label[,fold]) passed as csv_file"
            )
        return (
            f"audio folder {self.root}: no .wav files found in class sub-folders"
            " (root/<class>/*.wav)"
        )

    def records_from_csv(self, path: str) -> list[Record]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"audio folder CSV not found: {path}")
        rows = read_csv_rows(path, ("filepath", "label"), "filepath,label[,fold]")
        self.class_names = sorted({row["label"] for row in rows})
        label_of = {name: label for label, name in enumerate(self.class_names)}
        seen: dict[str, int] = {}
        records: list[Record] = []
        for line, row in enumerate(rows, start=2):
            where = f"{path}:{line}"
            position = seen.get(row["label"], 0)
            seen[row["label"]] = position + 1
            fold_text = (row.get("fold") or "").strip()
            try:
                fold = int(fold_text) if fold_text else self.round_robin_fold(position)
            except ValueError:
                raise DataFormatError(
                    f"{where}: fold must be an integer >= 1, got {fold_text!r}"
                ) from None
            if fold < 1:
                raise DataFormatError(
                    f"{where}: fold must be an integer >= 1, got {fold}"
                )
            file = resolve_under(
                self.root, row["filepath"]
            )  # existence is checked with the headers
            lat = csv_float(row.get("lat"), where, "lat")
            lon = csv_float(row.get("lon"), where, "lon")
            records.append(
                Record(file, label_of[row["label"]], row["label"], fold, lat, lon)
            )
        return records


__all__ = ["AudioFolder"]
