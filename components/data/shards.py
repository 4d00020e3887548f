"""WebDataset-format tar shards as a map-style data set: an index of members, read by offset.

A shard is an uncompressed tar of members ``<key>.<extension>``, the layout the
``webdataset`` package's ``TarWriter`` and ``ShardWriter`` write: the extension starts at the
first dot of the base name (``a.b/clip.seg.wav`` is key ``a.b/clip``, extension ``seg.wav``),
and the members of one key form one sample (``<key>.wav`` or ``<key>.flac``, with
``<key>.cls`` or ``<key>.json`` for its label and fold).

Opening the data set reads each shard's member index once with ``tarfile`` (names, data
offsets and sizes; the small ``.cls``/``.json`` members; every audio member's header checked)
and caches it as JSON under the user cache directory, keyed by the shard's path, size and
mtime, so a second run opens thousands of shards without reading them (under torchrun the
ranks share a cold cache's scans: each scans about 1/world of the shards, then reads the
others' entries). ``ds[i]`` then reads one member's bytes at its offset and decodes them:
no extraction, no one-file-per-clip cache, and no run-time dependency on ``webdataset``.

``epoch_order`` gives the runtime's sampler an order that keeps reads local: the shards in a
seeded order, their members through a seeded shuffle buffer; each rank takes a contiguous
block of it, so it opens about 1/world of the shards, and a resumed run rebuilds the same
order and skips what it has seen.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import random
import re
import tarfile
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Literal

import torch
import torch.distributed as dist

from components.data.audio_files import AudioFileChangedError, AudioFileDataset
from components.data.audio_io import (
    AUDIO_SUFFIXES,
    AudioFileError,
    DataFormatError,
    check_duration,
    SOUNDFILE_SUFFIXES,
    probe_soundfile,
    probe_wav_stream,
    read_soundfile,
    read_wav_bytes,
    user_cache_dir,
)
from components.data.base import (
    Record,
    check_split_settings,
    filter_folds,
    split_records,
)
from components.errors import UsageError
from components.registry import data_registry
from components.transforms.resample import resample

# webdataset's rule (``base_plus_ext``): the key is everything up to the first dot of the
# base name, the extension the rest; ``__...__`` members are the writer's metadata.
MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
META_MEMBER = re.compile(r"__[^/]*__($|/)")
GLOB_CHARACTERS = re.compile(r"[*?\[]")
BRACE_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
AUDIO_EXTENSIONS = tuple(suffix[1:] for suffix in AUDIO_SUFFIXES)
# Small members parsed into the index (labels, folds); larger ones are a damaged sample.
META_EXTENSIONS = ("cls", "json")
MAX_META_BYTES = 1 << 16
SHARD_INDEX_VERSION = 1
OPEN_SHARDS = 8  # file handles a process keeps open (reads are shard-local)
# Under torchrun, ranks share a cold index: each scans its shards of a round of this many
# per rank, then all meet (so no rank waits long at a collective for another's scans).
SCAN_ROUND = 8

# A member check: ``probe(name, extension, handle, size)`` raises ValueError for a bad member.
MemberProbe = Callable[[str, str, BinaryIO, int], None]


def split_outside_braces(text: str) -> list[str]:
    """``text`` split at the commas that lie outside braces."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "{") - (char == "}" and depth > 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def expand_braces(pattern: str) -> list[str]:
    """The names a brace pattern stands for, in order: ``{000..511}`` (zero padding kept,
    as in ``braceexpand``), ``{a,b}``, several and nested; a brace without either is literal.
    """
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth = 0
    for end in range(start, len(pattern)):
        depth += (pattern[end] == "{") - (pattern[end] == "}")
        if depth == 0:
            break
    else:
        return [pattern]  # an unclosed brace is literal
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    numbers = BRACE_RANGE.match(body)
    if numbers:
        first, last = numbers.groups()
        padded = any(
            len(n.lstrip("-")) > 1 and n.lstrip("-")[0] == "0" for n in (first, last)
        )
        width = max(len(first), len(last)) if padded else 0
        step = 1 if int(last) >= int(first) else -1
        choices = [f"{n:0{width}d}" for n in range(int(first), int(last) + step, step)]
    else:
        choices = split_outside_braces(body)
        if len(choices) == 1:
            return [head + "{" + body + "}" + rest for rest in expand_braces(tail)]
    return [head + name for choice in choices for name in expand_braces(choice + tail)]


def expand_shard_pattern(
    shards: str, root: str | None = None, source: str = "audio_shards"
) -> list[str]:
    """The shard files ``shards`` names, sorted and without duplicates.

    ``shards`` is one or more comma-separated patterns, each a path, a glob or a brace
    pattern (``shards/train-{000000..000511}.tar``), relative ones under ``root``. A pattern
    that matches nothing, or a name it spells out that does not exist, is a UsageError
    naming ``source`` (the data set's registered name).
    """
    patterns = [p.strip() for p in split_outside_braces(shards) if p.strip()]
    where = f" under {root}" if root else ""
    if not patterns:
        raise UsageError(
            f"{source}: shards is empty; set --data.shards to a path, glob or brace"
            " pattern of .tar shards, e.g. 'shards/train-{000000..000127}.tar'"
        )
    found: set[str] = set()
    for pattern in patterns:
        matched: list[str] = []
        missing: list[str] = []
        for name in expand_braces(os.path.expanduser(pattern)):
            path = name if root is None else os.path.join(root, name)
            if GLOB_CHARACTERS.search(name):
                matched += [p for p in glob.glob(path) if os.path.isfile(p)]
            elif os.path.isfile(path):
                matched.append(path)
            else:
                missing.append(path)
        if missing and matched:
            raise UsageError(
                f"{source}: {len(missing)} shard(s) that --data.shards {pattern!r} names"
                f" do not exist{where} (e.g. {missing[0]}); fetch them or narrow the pattern"
            )
        if not matched:
            raise UsageError(
                f"{source}: no shard matches --data.shards {pattern!r}{where}; point it at"
                " .tar shards (a path, glob or brace pattern such as 'shards/train-{000000..000127}.tar')"
            )
        found.update(matched)
    return sorted(found)


# --------------------------------------------------------------------------- index
@dataclass(frozen=True)
class ShardSample:
    """One key of a shard: its members (extension -> data offset, size), what its small
    members say (``.cls`` text, parsed ``.json``), and why it is unusable (None if it is).
    """

    key: str
    members: dict[str, tuple[int, int]]
    meta: dict[str, Any]
    problem: str | None = None


@dataclass(frozen=True)
class ShardIndex:
    """A shard's samples in member order, the stat they were read at, and the damage to the
    tar itself (None if intact; the samples before the damage are listed)."""

    path: str
    size: int
    mtime_ns: int
    samples: list[ShardSample]
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SHARD_INDEX_VERSION,
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "problem": self.problem,
            "samples": [
                [s.key, {e: list(m) for e, m in s.members.items()}, s.meta, s.problem]
                for s in self.samples
            ],
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> ShardIndex:
        samples = [
            ShardSample(key, {e: (m[0], m[1]) for e, m in members.items()}, meta, bad)
            for key, members, meta, bad in data["samples"]
        ]
        return ShardIndex(
            data["path"], data["size"], data["mtime_ns"], samples, data["problem"]
        )


def member_name(path: str, member: str) -> str:
    """How errors name a member of a shard."""
    return f"{path} member {member}"


def parse_meta(name: str, extension: str, data: bytes) -> Any:
    """A ``.cls`` member's text or a ``.json`` member's value; ValueError when unreadable."""
    try:
        text = data.decode("utf-8")
        return json.loads(text) if extension == "json" else text.strip()
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataFormatError(
            f"{name}: not UTF-8 {extension.upper()} ({error})"
        ) from None


def trailing_damage(handle: BinaryIO, path: str, offset: int, size: int) -> str | None:
    """What is wrong after the last member ``tarfile`` read (it stops silently at a damaged
    header): anything but the zero blocks that end an archive."""
    if size - offset < 1024:
        return (
            f"{path}: ends at byte {size} without the end-of-archive blocks (truncated,"
            " or still being written); the members before it are used"
        )
    handle.seek(offset)
    while True:
        block = handle.read(1 << 20)
        if not block:
            return None
        if block.count(0) != len(block):
            return (
                f"{path}: damaged: no readable tar header at byte {offset}; the members"
                " before it are used; rewrite the shard"
            )


def scan_shard(path: str, probe: MemberProbe | None = None) -> ShardIndex:
    """Read the member index of the tar at ``path`` (headers, small members, ``probe`` of
    the others); damage ends the listing and is reported, never raised."""
    stat = os.stat(path)
    keys: OrderedDict[str, dict[str, Any]] = OrderedDict()
    problem = None
    with open(path, "rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            raise UsageError(
                f"{path}: a gzip-compressed shard; the shard data sets read members at their offsets,"
                " which needs an uncompressed .tar: gunzip it, or write the shards as .tar"
            )
        handle.seek(0)
        try:
            tar = tarfile.open(fileobj=handle, mode="r:")
        except tarfile.TarError as error:
            return ShardIndex(
                path,
                stat.st_size,
                stat.st_mtime_ns,
                [],
                f"{path}: not a readable tar file ({error}); rewrite or re-download it",
            )
        try:
            for info in tar:
                match = MEMBER_NAME.match(info.name)
                if not info.isreg() or match is None or META_MEMBER.match(info.name):
                    continue
                entry = keys.setdefault(match.group(1), {"members": {}, "meta": {}})
                extension = match.group(2).lower()
                name = member_name(path, info.name)
                try:
                    if info.offset_data + info.size > stat.st_size:
                        raise AudioFileError(
                            f"{name}: truncated: {info.size} bytes announced,"
                            f" {max(0, stat.st_size - info.offset_data)} present;"
                            " re-download or rewrite the shard"
                        )
                    if extension in entry["members"]:
                        raise DataFormatError(
                            f"{name}: a second .{extension} member of key {match.group(1)!r}"
                        )
                    entry["members"][extension] = (info.offset_data, info.size)
                    if extension in META_EXTENSIONS:
                        if info.size > MAX_META_BYTES:
                            raise DataFormatError(
                                f"{name}: {info.size} bytes is too large for a label member"
                            )
                        member = tar.extractfile(info)
                        assert member is not None
                        entry["meta"][extension] = parse_meta(
                            name, extension, member.read()
                        )
                    elif probe is not None:
                        member = tar.extractfile(info)
                        assert member is not None
                        probe(name, extension, member, info.size)
                except ValueError as error:
                    entry.setdefault("problem", str(error))
            problem = trailing_damage(handle, path, tar.offset, stat.st_size)
        except tarfile.TarError as error:
            problem = (
                f"{path}: damaged or truncated after byte {tar.offset} ({error}); the"
                " members before it are used; re-download or rewrite the shard"
            )
    samples = [
        ShardSample(key, e["members"], e["meta"], e.get("problem"))
        for key, e in keys.items()
    ]
    return ShardIndex(path, stat.st_size, stat.st_mtime_ns, samples, problem)


def index_cache_path(directory: Path, path: str, kind: str) -> Path:
    ident = f"{os.path.realpath(path)}\0{kind}\0{SHARD_INDEX_VERSION}"
    return directory / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.json"


def load_shard_index(
    path: str,
    probe: MemberProbe | None = None,
    *,
    kind: str = "members",
    cache_dir: str | os.PathLike[str] | None = None,
) -> ShardIndex:
    """``scan_shard(path, probe)``, through a JSON cache in ``cache_dir`` (None: no cache).

    An entry is used only while the shard's size and mtime are those it was read at;
    ``kind`` names what ``probe`` checks (data sets that check members differently keep
    separate entries). A cache that cannot be written only costs the next run a rescan.
    """
    if cache_dir is None:
        return scan_shard(path, probe)
    target = index_cache_path(Path(cache_dir), path, kind)
    stat = os.stat(path)
    try:
        cached = json.loads(target.read_text(encoding="utf-8"))
        if (
            cached.get("version") == SHARD_INDEX_VERSION
            and cached.get("size") == stat.st_size
            and cached.get("mtime_ns") == stat.st_mtime_ns
        ):
            return ShardIndex.from_json({**cached, "path": path})
    except (OSError, ValueError, KeyError, TypeError):
        pass
    index = scan_shard(path, probe)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(index.to_json(), out)
        os.replace(temporary, target)
    except OSError:
        pass
    return index


def index_sharing_ranks() -> tuple[int, int]:
    """This process's rank and the number of ranks when ``torch.distributed`` is initialized
    (``(0, 1)`` in a single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def raise_if_a_rank_failed(error: BaseException | None, rank: int, world: int) -> None:
    """Where the ranks meet while indexing: every rank learns whether one failed, and then
    raises (the failing rank its own error, the others a UsageError saying it), so that no
    rank is left waiting at a later collective for one that stopped."""
    message = None
    if error is not None:
        message = (
            str(error)
            if isinstance(error, UsageError)
            else f"rank {rank} could not index the shards ({type(error).__name__}: {error})"
        )
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, message)
    if error is not None:
        raise error
    for found in gathered:
        if found is not None:
            raise UsageError(found)


def expand_on_every_rank(
    shards: str, root: str | None, source_name: str, *, meets: bool
) -> list[str]:
    """``expand_shard_pattern`` where the ranks are about to meet while indexing (``meets``:
    under torchrun with the index cache on, `load_shard_indexes`). Every rank first learns
    whether one failed to expand the pattern, or found other shards than rank 0 (a folder
    only one node has, a glob over a file system the nodes see differently), and all stop
    with one message: none waits at the first meeting for a rank that stopped, and no rank
    trains on other shards than the rest."""
    failure, paths = None, []
    try:
        paths = expand_shard_pattern(shards, root, source_name)
    except Exception as error:  # told to the other ranks, then raised here
        failure = error
    rank, world = index_sharing_ranks()
    if not meets or world == 1:
        if failure is not None:
            raise failure
        return paths
    raise_if_a_rank_failed(failure, rank, world)
    digest = hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (len(paths), digest))
    for other, (count, found) in enumerate(gathered):
        if found != gathered[0][1]:
            raise UsageError(
                f"{source_name}: rank {other} finds {count} shard(s) for {shards!r} where rank 0"
                f" finds {gathered[0][0]} (or other ones): every rank must see the same shards;"
                " keep them on a file system every node shares, under the same path"
            )
    return paths


def load_shard_indexes(
    paths: list[str],
    probe: MemberProbe | None = None,
    *,
    kind: str = "members",
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[ShardIndex]:
    """``load_shard_index`` of each of ``paths``, in order.

    Under torchrun (``torch.distributed`` initialized, several ranks) with a cache, the
    ranks share the scans of a cold cache instead of each scanning every shard: rank ``r``
    loads the shards whose position is ``r`` mod the world size (scanning and caching those
    not cached yet), in rounds of ``SCAN_ROUND`` per rank after which all meet; then each
    rank reads the others' entries from the cache (and scans a shard itself only where it
    finds none, e.g. a cache that could not be written). Every rank ends with the same
    indexes, so the same problems; a failure on one rank stops all of them with an error.
    """
    rank, world = index_sharing_ranks()
    if cache_dir is None or world == 1:
        return [
            load_shard_index(path, probe, kind=kind, cache_dir=cache_dir)
            for path in paths
        ]
    loaded: dict[int, ShardIndex] = {}
    per_round = world * SCAN_ROUND
    for start in range(0, len(paths), per_round):
        failure = None
        try:
            for i in range(start + rank, min(start + per_round, len(paths)), world):
                loaded[i] = load_shard_index(
                    paths[i], probe, kind=kind, cache_dir=cache_dir
                )
        except Exception as error:  # told to the other ranks, then raised here
            failure = error
        raise_if_a_rank_failed(failure, rank, world)
    failure = None
    try:
        for i, path in enumerate(paths):
            if i not in loaded:
                loaded[i] = load_shard_index(
                    path, probe, kind=kind, cache_dir=cache_dir
                )
    except Exception as error:
        failure = error
    raise_if_a_rank_failed(failure, rank, world)
    return [loaded[i] for i in range(len(paths))]


def probe_audio_member(name: str, extension: str, handle: BinaryIO, size: int) -> None:
    """The header check of an audio member (``AudioFileError`` if bad); others pass."""
    if extension not in AUDIO_EXTENSIONS:
        return
    if f".{extension}" in SOUNDFILE_SUFFIXES:
        info = probe_soundfile(name, source=handle)
    else:
        info = probe_wav_stream(name, handle, size)
    check_duration(name, info)


# --------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class Tagged:
    """What a sample's label members say: a class index and/or name, and a fold."""

    index: int | None
    name: str | None
    fold: int | None


def read_tags(path: str, sample: ShardSample) -> Tagged:
    """The label and fold of ``sample`` from its ``.json`` (``label``: an index or a class
    name; ``category``: a class name; ``fold``) or ``.cls`` (an index); ValueError if none.
    """
    where = member_name(path, sample.key)
    index: Any = None
    name: Any = None
    fold: Any = None
    if "json" in sample.meta:
        value = sample.meta["json"]
        if not isinstance(value, dict):
            raise DataFormatError(
                f"{where}.json: expected an object with label (and fold), got {type(value).__name__}"
            )
        label, name, fold = value.get("label"), value.get("category"), value.get("fold")
        if isinstance(label, str):
            name, label = (label if name is None else name), None
        index = label
    if index is None and "cls" in sample.meta:
        try:
            index = int(sample.meta["cls"])
        except ValueError:
            raise DataFormatError(
                f"{where}.cls: a class index must be an integer, got {sample.meta['cls']!r}"
            ) from None
    if index is None and name is None:
        raise DataFormatError(
            f"{where}: no label (a .cls member, or a .json member with a label or category);"
            " write one with the sample"
        )
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or index < 0
    ):
        raise DataFormatError(
            f"{where}: label must be a class index >= 0 or a class name, got {index!r}"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise DataFormatError(f"{where}: category must be a class name, got {name!r}")
    if fold is not None and (
        not isinstance(fold, int) or isinstance(fold, bool) or fold < 1
    ):
        raise DataFormatError(f"{where}: fold must be an integer >= 1, got {fold!r}")
    return Tagged(index, name, fold)


def class_names_of(
    tags: list[Tagged], classes: list[str] | None, source: str = "audio_shards"
) -> list[str]:
    """The class names: ``classes`` when given; else indexed by the labels' class indices
    (named by their ``category``, or ``class_<i>``); else the sorted label names. Errors
    name ``source``, the data set."""
    if classes is not None:
        return list(classes)
    indexed = [t.index for t in tags if t.index is not None]
    if not indexed:
        return sorted({t.name for t in tags if t.name is not None})
    names = [f"class_{i}" for i in range(max(indexed) + 1)]
    named: dict[int, str] = {}
    for tag in tags:
        if tag.index is not None and tag.name is not None:
            if named.setdefault(tag.index, tag.name) != tag.name:
                raise DataFormatError(
                    f"{source}: class index {tag.index} is named both {named[tag.index]!r}"
                    f" and {tag.name!r}; fix the labels or set classes (--data.classes)"
                )
            names[tag.index] = tag.name
    return names


def label_of(tag: Tagged, class_names: list[str], index_of: dict[str, int]) -> int:
    """The class index of a sample; ValueError when its label is not one of the classes."""
    if tag.index is not None:
        if tag.index >= len(class_names):
            raise DataFormatError(
                f"label {tag.index} is out of range for the {len(class_names)} classes;"
                " set classes (--data.classes) to name them all"
            )
        return tag.index
    assert tag.name is not None
    if tag.name not in index_of:
        shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
        raise DataFormatError(
            f"unknown class name {tag.name!r} (the classes are {shown}); set classes (--data.classes)"
            " naming every class"
        )
    return index_of[tag.name]


# --------------------------------------------------------------------------- data set
@data_registry.register("audio_shards", version="1.0")
class AudioShards(AudioFileDataset):
    """Labelled audio from WebDataset-format tar shards, at ``sample_rate``, streamed by offset.

    Each sample is ``<key>.wav`` or ``<key>.flac`` with ``<key>.cls`` (a class index) or
    ``<key>.json`` (``{"label": index or class name, "category": name, "fold": n}``), as the
    ``webdataset`` package writes them. Folds come from the ``.json`` ``fold``, else each
    class's samples are dealt round-robin into ``num_folds`` folds; ``split``,
    ``group_pattern`` (over the key's base name) and ``holdout_fraction`` work as for
    ``audio_folder``. Bad members (undecodable or truncated audio, a missing or unknown
    label, a damaged tar) are named; ``skip_bad_files`` leaves them out and counts them.

    Args:
        shards: Shard files: a path, glob or brace pattern
            (shards/train-{000000..000511}.tar), or several, comma-separated.
        root: Folder that relative shard patterns are read under (--data-dir sets it;
            default: the working directory).
        sample_rate: Rate of the clips it returns; members at another rate are resampled.
        folds: Folds to keep (all when unset).
        classes: Class names in label order (default: the .json categories or label
            names, else class_<i> for each class index).
        clip_seconds: Longer clips are cut to this many seconds (never padded); unset
            keeps every clip whole.
        shuffle_buffer: Size of the seeded shuffle buffer that mixes neighbouring
            samples of the shuffled shards each epoch (0: shard by shard, in order).
        num_folds: Folds to deal samples into, per class, when their .json has no fold.
        split: folds (the shards' folds, or round-robin per class), random or
            stratified (a split_seed-seeded shuffle).
        group_pattern: Regex over a key's base name naming its group (e.g. a speaker
            prefix); a group stays in one fold.
        holdout_fraction: Make two folds instead: fold 1 to train on, fold 2 holding
            about this fraction of the data.
        split_seed: Seed of the random and stratified splits.
        skip_bad_files: Leave out bad members and damaged shards (named in a warning and
            counted) instead of stopping with an error.
        cache: Keep each shard's member index in a cache, so later runs open the shards
            without reading them.
        cache_dir: Folder of that index cache (default: the user cache directory,
            $SIGMAE_CACHE_DIR when set).
    """

    signal_kind = "audio"
    source_name = "audio_shards"  # its registered name, which its messages start with

    def __init__(
        self,
        shards: str = "data/shards/*.tar",
        root: str | None = None,
        sample_rate: int = 16000,
        folds: list[int] | None = None,
        classes: list[str] | None = None,
        clip_seconds: float | None = 10.0,
        shuffle_buffer: int = 1000,
        num_folds: int = 5,
        split: Literal["folds", "random", "stratified"] = "folds",
        group_pattern: str | None = None,
        holdout_fraction: float | None = None,
        split_seed: int = 0,
        skip_bad_files: bool = False,
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            root or ".", sample_rate, clip_seconds, skip_bad_files, False, None
        )
        pattern = check_split_settings(
            "audio_shards", split, num_folds, holdout_fraction, group_pattern
        )
        if shuffle_buffer < 0:
            raise ValueError(
                f"audio_shards: shuffle_buffer must be >= 0, got {shuffle_buffer}"
            )
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError(f"audio_shards: classes names a class twice: {classes}")
        self.shuffle_buffer = shuffle_buffer
        labelled, problems = self.index_shards(
            shards,
            root,
            classes,
            cache,
            cache_dir,
            kind="audio",
            probe=probe_audio_member,
            extensions=AUDIO_EXTENSIONS,
            missing=f"audio member (.{' or .'.join(AUDIO_EXTENSIONS[:2])})",
        )
        records: list[Record] = []
        position_in_class: dict[int, int] = {}
        for key, tag, label in labelled:
            position = position_in_class.get(label, 0)
            position_in_class[label] = position + 1
            fold = tag.fold if tag.fold is not None else position % num_folds + 1
            records.append(Record(key, label, self.class_names[label], fold))
        self.report_problems(problems)
        if not records:
            raise FileNotFoundError(
                f"audio_shards: the {len(self.shard_paths)} shard(s) of {shards!r} hold no"
                " labelled audio (<key>.wav or <key>.flac with <key>.cls or <key>.json)"
            )
        records = split_records(
            records,
            split,
            num_folds=num_folds,
            seed=split_seed,
            holdout_fraction=holdout_fraction,
            group_pattern=pattern,
        )
        self.records = filter_folds(records, folds, shards)

    def index_shards(
        self,
        shards: str,
        root: str | None,
        classes: list[str] | None,
        cache: bool,
        cache_dir: str | None,
        *,
        kind: str,
        probe: MemberProbe | None,
        extensions: tuple[str, ...],
        missing: str,
    ) -> tuple[list[tuple[str, Tagged, int]], list[tuple[str, str]]]:
        """Index the shards of ``shards``: ``(record key, tags, label)`` of every labelled
        sample with a member of ``extensions``, and the problems found (not yet reported).

        Sets ``shard_paths``, ``shard_stats``, ``class_names``, the member table and the
        per-process file cache; what a sample's fold is stays the caller's rule.
        """
        self.shard_paths = expand_on_every_rank(
            shards, root, self.source_name, meets=cache
        )
        index_dir = None
        if cache:
            index_dir = (
                cache_dir if cache_dir is not None else user_cache_dir() / "shards"
            )
        indexes = load_shard_indexes(
            self.shard_paths, probe, kind=kind, cache_dir=index_dir
        )
        self.shard_stats = [(index.size, index.mtime_ns) for index in indexes]
        problems = [(index.path, index.problem) for index in indexes if index.problem]
        usable: list[tuple[int, ShardSample, Tagged, str]] = []
        for shard, index in enumerate(indexes):
            for sample in index.samples:
                found = [e for e in sample.members if e in extensions]
                try:
                    if sample.problem is not None:
                        raise DataFormatError(sample.problem)
                    if not found:
                        if not set(sample.members) & set(META_EXTENSIONS):
                            continue  # a key with other members only (features, text)
                        raise DataFormatError(
                            f"{member_name(index.path, sample.key)}: no {missing}"
                            " beside its label"
                        )
                    usable.append(
                        (shard, sample, read_tags(index.path, sample), found[0])
                    )
                except ValueError as error:
                    problems.append((f"{index.path}/{sample.key}", str(error)))
        self.class_names = class_names_of(
            [tag for _, _, tag, _ in usable], classes, self.source_name
        )
        index_of = {name: i for i, name in enumerate(self.class_names)}
        labelled: list[tuple[str, Tagged, int]] = []
        # record key -> (shard, member key, member extension, data offset, size)
        self._members: dict[str, tuple[int, str, str, int, int]] = {}
        for shard, sample, tag, extension in usable:
            key = f"{self.shard_paths[shard]}/{sample.key}"
            try:
                label = label_of(tag, self.class_names, index_of)
            except ValueError as error:
                problems.append(
                    (
                        key,
                        f"{member_name(self.shard_paths[shard], sample.key)}: {error}",
                    )
                )
                continue
            labelled.append((key, tag, label))
            self._members[key] = (
                shard,
                sample.key,
                extension,
                *sample.members[extension],
            )
        self._handles: OrderedDict[int, BinaryIO] = OrderedDict()
        self._handles_pid = os.getpid()
        return labelled, problems

    def report_problems(self, problems: list[tuple[str, str]]) -> None:
        """Raise one error naming the bad members and the fix, or (``skip_bad_files``) warn and count them."""
        if not problems:
            return
        messages = [message for _, message in problems]
        if not self.skip_bad_files:
            shown = "\n  ".join(messages[:10])
            more = (
                f"\n  ... and {len(messages) - 10} more" if len(messages) > 10 else ""
            )
            raise UsageError(
                f"{self.source_name}: {len(messages)} bad sample(s) or shard(s):\n  {shown}{more}\n"
                "Fix or rewrite those shards, or pass --data.skip_bad_files to leave them out."
            )
        self.skipped_files = [key for key, _ in problems]
        warnings.warn(
            f"{self.source_name}: skipped {len(messages)} bad sample(s) or shard(s): "
            + "; ".join(messages[:10]),
            stacklevel=3,
        )

    # -- reading
    def __getstate__(self) -> dict[str, Any]:
        """Pickled for DataLoader workers without its open files (each opens its own)."""
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state

    def shard_handle(self, shard: int) -> BinaryIO:
        """This process's open file of shard ``shard`` (a forked worker opens its own)."""
        if self._handles_pid != os.getpid():
            self._handles, self._handles_pid = OrderedDict(), os.getpid()
        handle = self._handles.get(shard)
        if handle is not None:
            self._handles.move_to_end(shard)
            return handle
        path = self.shard_paths[shard]
        handle = open(path, "rb", buffering=0)
        stat = os.fstat(handle.fileno())
        if (stat.st_size, stat.st_mtime_ns) != self.shard_stats[shard]:
            handle.close()
            raise AudioFileError(
                f"{path}: the shard changed since the data set was opened"
            )
        self._handles[shard] = handle
        while len(self._handles) > OPEN_SHARDS:
            self._handles.popitem(last=False)[1].close()
        return handle

    def read_member(self, index: int) -> tuple[str, str, bytes]:
        """The name, extension and bytes of record ``index``'s audio member."""
        key = self.records[index].key
        shard, member, extension, offset, size = self._members[key]
        name = member_name(self.shard_paths[shard], f"{member}.{extension}")
        handle = self.shard_handle(shard)
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise AudioFileError(
                f"{name}: truncated: {len(data)} of its {size} bytes present"
            )
        return name, extension, data

    def load(self, index: int) -> torch.Tensor:
        """The clip at its own length, cut to ``clip_seconds`` when set (never padded)."""
        try:
            name, extension, data = self.read_member(index)
            if f".{extension}" in SOUNDFILE_SUFFIXES:
                samples, rate = read_soundfile(name, source=io.BytesIO(data))
            else:
                samples, rate = read_wav_bytes(name, data)
        except (AudioFileError, OSError) as error:
            problem = (
                str(error)
                if isinstance(error, AudioFileError)
                else f"{self.records[index].key}: cannot be read ({error.strerror or error})"
            )
            raise AudioFileChangedError(
                f"{' '.join(problem.split())} (it was readable when the data set was opened:"
                " deleted or changed during the run?); restore it and resume with --resume,"
                " or pass --data.skip_bad_files to skip such members"
            ) from None
        if rate != self.sample_rate:
            samples = resample(samples, rate, self.sample_rate)
        if self.clip_samples is not None:
            samples = samples[..., : self.clip_samples]
        return samples

    # -- order
    def epoch_order(self, seed: int, epoch: int) -> list[int]:
        """All record indices in this epoch's order, a pure function of ``(seed, epoch)``:
        the shards shuffled, then their members through a ``shuffle_buffer``-sized buffer,
        so consecutive indices mostly come from one shard."""
        rng = random.Random((seed * 1_000_003 + epoch) % (2**63 - 1))
        by_shard: dict[int, list[int]] = {}
        for i, record in enumerate(self.records):
            by_shard.setdefault(self._members[record.key][0], []).append(i)
        shard_order = sorted(by_shard)
        rng.shuffle(shard_order)
        stream = [i for shard in shard_order for i in by_shard[shard]]
        if self.shuffle_buffer <= 1:
            return stream
        order: list[int] = []
        buffer: list[int] = []
        for i in stream:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(i)
                continue
            slot = rng.randrange(len(buffer))
            order.append(buffer[slot])
            buffer[slot] = i
        rng.shuffle(buffer)
        return order + buffer


__all__ = [
    "AudioShards",
    "ShardIndex",
    "ShardSample",
    "expand_braces",
    "expand_on_every_rank",
    "expand_shard_pattern",
    "load_shard_index",
    "load_shard_indexes",
    "scan_shard",
]
