"""Splits: the data set's own folds, seeded random / stratified folds, hold-out, and groups that never span folds."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from components.contracts.data import tone_clip, write_pcm_wav
from components.data import AudioFolder
from components.data.base import Record, check_split_settings, split_records

SPEAKER = re.compile(r"^([a-z]+)_")


def speaker_records(speakers: int, per_speaker: list[int], classes: int) -> list[Record]:
    """Files ``/d/<speaker>_<i>.wav``, labels cycling over ``classes``, all in fold 1."""
    records = []
    for s in range(speakers):
        name = "".join(chr(ord("a") + int(d)) for d in f"{s:03d}")
        for i in range(per_speaker[s % len(per_speaker)]):
            label = (s + i) % classes
            records.append(Record(f"/d/{name}_{i}.wav", label, f"c{label}", 1))
    return records


@settings(deadline=None)
@given(
    speakers=st.integers(2, 30),
    per_speaker=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    classes=st.integers(1, 6),
    split=st.sampled_from(["folds", "random", "stratified"]),
    num_folds=st.integers(2, 6),
    holdout=st.sampled_from([None, 0.2, 0.5]),
    seed=st.integers(0, 3),
)
def test_a_group_never_spans_two_folds(
    speakers: int, per_speaker: list[int], classes: int, split: str, num_folds: int, holdout: float | None, seed: int
) -> None:
    records = speaker_records(speakers, per_speaker, classes)
    expected = 2 if holdout is not None else num_folds
    if speakers < expected:  # too few groups to fill every fold: said, not a silently empty fold
        with pytest.raises(ValueError, match=f"{speakers} groups cannot fill {expected} folds"):
            split_records(records, split, num_folds=num_folds, seed=seed, holdout_fraction=holdout, group_pattern=SPEAKER)
        return
    out = split_records(records, split, num_folds=num_folds, seed=seed, holdout_fraction=holdout, group_pattern=SPEAKER)
    folds_of_speaker: dict[str, set[int]] = {}
    for record in out:
        folds_of_speaker.setdefault(SPEAKER.match(Path(record.key).name).group(1), set()).add(record.fold)
    assert all(len(folds) == 1 for folds in folds_of_speaker.values()), folds_of_speaker
    assert {r.key for r in out} == {r.key for r in records} and len(out) == len(records)
    assert {r.fold for r in out} == set(range(1, expected + 1))  # no fold left empty
    assert out == split_records(records, split, num_folds=num_folds, seed=seed, holdout_fraction=holdout, group_pattern=SPEAKER)


@settings(deadline=None)
@given(n=st.integers(7, 200), num_folds=st.integers(2, 7), seed=st.integers(0, 10**6))
def test_random_folds_are_equal_in_size(n: int, num_folds: int, seed: int) -> None:
    records = [Record(f"/d/{i}.wav", i % 3, "c", 1) for i in range(n)]
    counted = Counter(r.fold for r in split_records(records, "random", num_folds=num_folds, seed=seed))
    sizes = [counted.get(fold, 0) for fold in range(1, num_folds + 1)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n, sizes


@settings(deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=6), num_folds=st.integers(2, 6), seed=st.integers(0, 10**6))
def test_stratified_folds_keep_each_class_balanced(counts: list[int], num_folds: int, seed: int) -> None:
    assume(sum(counts) >= num_folds)
    records = [Record(f"/d/{c}_{i}.wav", c, f"c{c}", 1) for c, n in enumerate(counts) for i in range(n)]
    out = split_records(records, "stratified", num_folds=num_folds, seed=seed)
    for label, n in enumerate(counts):
        per_fold = Counter(r.fold for r in out if r.label == label)
        shares = [per_fold.get(f, 0) for f in range(1, num_folds + 1)]
        assert max(shares) - min(shares) <= 1, (label, shares)


@settings(deadline=None)
@given(n=st.integers(10, 300), fraction=st.floats(0.05, 0.95), seed=st.integers(0, 100))
def test_holdout_fraction_holds_out_that_share(n: int, fraction: float, seed: int) -> None:
    records = [Record(f"/d/{i}.wav", 0, "c", 1) for i in range(n)]
    held = sum(r.fold == 2 for r in split_records(records, "random", num_folds=5, seed=seed, holdout_fraction=fraction))
    assert abs(held - fraction * n) <= 1, (held, fraction * n)


def test_seeds_give_different_random_splits_and_folds_keeps_the_data_sets_own() -> None:
    records = [Record(f"/d/{i}.wav", i % 2, "c", (i % 3) + 1) for i in range(60)]
    assert split_records(records, "folds", num_folds=5) == records
    held = split_records(records, "folds", num_folds=5, holdout_fraction=0.25)  # hold-out applies to folds too
    assert sum(r.fold == 2 for r in held) == 15 and {r.fold for r in held} == {1, 2}
    first, second = (split_records(records, "random", num_folds=5, seed=s) for s in (0, 1))
    assert [r.fold for r in first] != [r.fold for r in second]


@pytest.mark.parametrize(
    ("settings_", "fragment"),
    [
        (("rnd", 5, None, None), "split must be folds, random or stratified"),
        (("random", 0, None, None), "num_folds must be at least 1"),
        (("random", 5, 1.0, None), "holdout_fraction must lie strictly between 0 and 1"),
        (("random", 5, None, "(unclosed"), "is not a regular expression"),
    ],
)
def test_bad_split_settings_name_the_setting(settings_: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        check_split_settings("audio_folder", *settings_)


def test_a_file_the_group_pattern_misses_is_named() -> None:
    records = [Record("/d/alice_1.wav", 0, "c", 1), Record("/d/README-take.wav", 0, "c", 1)]
    with pytest.raises(ValueError, match="README-take.wav"):
        split_records(records, "random", num_folds=2, group_pattern=SPEAKER)


def test_audio_folder_keeps_each_speaker_in_one_fold(tmp_path: Path) -> None:
    root = tmp_path / "words"
    for word in ("yes", "no"):
        for speaker in ("anna", "ben", "carl", "dora", "emil", "fay"):
            for take in range(3):
                write_pcm_wav(root / word / f"{speaker}_{take}.wav", tone_clip(300.0 + 50 * take, 8000, 400), 8000)
    default = AudioFolder(root=str(root), sample_rate=8000, cache=False)
    spans = {Path(r.key).name.split("_")[0]: set() for r in default.records}
    for r in default.records:
        spans[Path(r.key).name.split("_")[0]].add(r.fold)
    assert max(len(f) for f in spans.values()) > 1  # the round-robin default mixes a speaker's takes
    grouped = AudioFolder(root=str(root), sample_rate=8000, cache=False, split="stratified", num_folds=3,
                          group_pattern=r"^([a-z]+)_", split_seed=4)
    by_speaker: dict[str, set[int]] = {}
    for r in grouped.records:
        by_speaker.setdefault(Path(r.key).name.split("_")[0], set()).add(r.fold)
    assert all(len(f) == 1 for f in by_speaker.values()) and {f for fs in by_speaker.values() for f in fs} == {1, 2, 3}
    held = AudioFolder(root=str(root), sample_rate=8000, cache=False, split="random", holdout_fraction=0.34,
                       group_pattern=r"^([a-z]+)_", folds=[2])
    assert {Path(r.key).name.split("_")[0] for r in held.records} and len(held) == 12  # two of six speakers
