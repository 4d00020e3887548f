"""Under torchrun, the ranks opening shard data sets on a cold index cache share the scans:
rank ``r`` scans only the shards at positions ``r`` mod the world size, every rank ends with
the same index, bad members are reported the same on every rank, and a shard that stops one
rank's scan stops every rank with the same error (none left waiting)."""

from __future__ import annotations

import gzip
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from components.data.shards import AudioShards
from components.recipes.shard import ShardWriter, json_bytes, wav_bytes
from test_runtime_helpers import free_port, spawn_and_join

NUM_SHARDS, PER_SHARD = 6, 3
GOOD = f"s-{{000000..{NUM_SHARDS - 1:06d}}}.tar"  # the pattern of the shards write_shards writes


def write_shards(folder: Path, num_shards: int = NUM_SHARDS, damaged: bool = False) -> str:
    """``folder/s-00000N.tar``: tone ``i`` is ``1600 + 7 i`` samples long, class ``i % 2``;
    ``damaged``: item 1 is no WAV and item 4 has no label."""
    folder.mkdir(parents=True)
    writer = ShardWriter(folder, "s", PER_SHARD, None)
    for i in range(num_shards * PER_SHARD):
        clip = torch.sin(torch.arange(1600 + 7 * i) * 0.05 * (1 + i % 2)) * 0.5
        members = {"wav": b"RIFF not a wave" if damaged and i == 1 else wav_bytes(clip, 16000)}
        if not (damaged and i == 4):
            members["json"] = json_bytes({"label": i % 2, "category": f"c{i % 2}"})
        writer.add(f"k{i:03d}", members)
    writer.close()
    return str(folder / f"s-{{000000..{num_shards - 1:06d}}}.tar")


def index_of(ds: AudioShards) -> dict:
    return {
        "records": [[r.key, r.label, r.category, r.fold] for r in ds.records],
        "members": sorted([key, *value] for key, value in ds._members.items()),
        "class_names": ds.class_names,
        "stats": ds.shard_stats,
    }


def _join_two_ranks(rank: int, port: int) -> None:
    from components.distributed import dist_info_from_env, init_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    init_distributed(dist_info_from_env(), torch.device("cpu"))


def _refusal(**kwargs) -> str | None:  # noqa: ANN003
    """The UsageError message opening ``AudioShards(**kwargs)`` gives (None: it opened)."""
    from components.errors import UsageError

    try:
        AudioShards(**kwargs)
    except UsageError as error:
        return str(error)
    return None


def _open_on_two_ranks(rank: int, port: int, folder: str) -> None:
    import components.data.shards as shards_module
    from components.distributed import shutdown_distributed

    _join_two_ranks(rank, port)
    shards_module.SCAN_ROUND = 2  # 6 shards: rounds of 4 and 2, so the ranks meet twice
    real_scan = shards_module.scan_shard
    scanned: list[str] = []

    def counting_scan(path: str, probe=None):  # noqa: ANN001, ANN202
        scanned.append(Path(path).name)
        return real_scan(path, probe)

    shards_module.scan_shard = counting_scan
    cache = f"{folder}/cache"
    seen: dict = {}
    try:
        ds = AudioShards(shards=f"{folder}/good/{GOOD}", cache_dir=cache, clip_seconds=None)
        seen["cold scans"], seen["cold index"] = list(scanned), index_of(ds)
        scanned.clear()
        warm = AudioShards(shards=f"{folder}/good/{GOOD}", cache_dir=cache, clip_seconds=None)
        seen["warm scans"], seen["warm index"] = list(scanned), index_of(warm)
        scanned.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            AudioShards(shards=f"{folder}/bad/{GOOD}", cache_dir=cache, skip_bad_files=True)
        seen["warnings"] = [str(w.message) for w in caught]
        seen["error"] = _refusal(shards=f"{folder}/bad/{GOOD}", cache_dir=cache)
        seen["bad scans"] = list(scanned)
        # shard 1 (rank 1's) is gzip-compressed: rank 1's scan raises, rank 0 must not wait
        seen["gzip"] = _refusal(shards=f"{folder}/gz/s-{{000000..000003}}.tar", cache_dir=cache)
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(seen))
    finally:
        shutdown_distributed()



@pytest.mark.slow
def test_ranks_share_the_scans_of_a_cold_index_and_end_with_the_same_index(tmp_path: Path) -> None:
    write_shards(tmp_path / "good")
    write_shards(tmp_path / "bad", damaged=True)
    write_shards(tmp_path / "gz", num_shards=4)
    shard = tmp_path / "gz" / "s-000001.tar"
    shard.write_bytes(gzip.compress(shard.read_bytes()))
    spawn_and_join(_open_on_two_ranks, (free_port(), str(tmp_path)), nprocs=2, timeout=180)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    names = [f"s-{i:06d}.tar" for i in range(NUM_SHARDS)]
    # on a cold cache each rank scanned only its share; warm, no rank scans
    assert ranks[0]["cold scans"] == names[0::2] and ranks[1]["cold scans"] == names[1::2]
    assert ranks[0]["warm scans"] == ranks[1]["warm scans"] == []
    assert ranks[0]["bad scans"] == names[0::2] and ranks[1]["bad scans"] == names[1::2]
    # the same index on both ranks, and the one a single process builds
    single = index_of(AudioShards(shards=str(tmp_path / "good" / GOOD), cache=False, clip_seconds=None))
    assert ranks[0]["cold index"] == ranks[1]["cold index"] == ranks[0]["warm index"] == ranks[1]["warm index"]
    assert json.loads(json.dumps(single)) == ranks[0]["cold index"] and len(single["records"]) == NUM_SHARDS * PER_SHARD
    # bad members: the same warning and the same error on every rank, naming both
    assert len(ranks[0]["warnings"]) == 1 and ranks[0]["warnings"] == ranks[1]["warnings"]
    assert ranks[0]["error"] == ranks[1]["error"] and ranks[0]["error"].startswith("audio_shards: 2 bad sample(s)")
    for message in (ranks[0]["warnings"][0], ranks[0]["error"]):
        assert "s-000000.tar member k001.wav" in message and "s-000001.tar member k004: no label" in message
    # a shard that stops rank 1's scan stops rank 0 too, with rank 1's message
    assert ranks[0]["gzip"] == ranks[1]["gzip"] and "s-000001.tar: a gzip-compressed shard" in ranks[0]["gzip"]


def _expand_on_two_ranks(rank: int, port: int, folder: str) -> None:
    from components.distributed import shutdown_distributed

    _join_two_ranks(rank, port)
    seen: dict = {}
    try:
        for case, pattern in (
            ("only rank 0 has them", f"{folder}/rank{rank}/{GOOD}"),  # rank 1's folder does not exist
            ("ranks see other shards", f"{folder}/view{rank}/*.tar"),  # 6 shards for rank 0, 4 for rank 1
        ):
            seen[case] = _refusal(shards=pattern, cache_dir=f"{folder}/cache", clip_seconds=None)
        (Path(folder) / f"expand{rank}.json").write_text(json.dumps(seen))
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_a_rank_that_cannot_expand_the_pattern_or_sees_other_shards_stops_every_rank(tmp_path: Path) -> None:
    """Before the first meeting of the shared scan: no rank is left waiting for the timeout."""
    write_shards(tmp_path / "rank0")
    write_shards(tmp_path / "view0")
    write_shards(tmp_path / "view1", num_shards=4)
    spawn_and_join(_expand_on_two_ranks, (free_port(), str(tmp_path)), nprocs=2, timeout=120)
    ranks = [json.loads((tmp_path / f"expand{r}.json").read_text()) for r in (0, 1)]
    missing = [rank["only rank 0 has them"] for rank in ranks]
    assert all(missing) and missing[0] == missing[1] and "rank1" in missing[0], missing
    other = [rank["ranks see other shards"] for rank in ranks]  # each names its own pattern
    assert all("rank 1 finds 4 shard(s)" in message and "where rank 0 finds 6" in message for message in other), other
