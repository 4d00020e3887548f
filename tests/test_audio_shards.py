"""``audio_shards``: WebDataset-format tar shards written by the real ``webdataset`` package are
read back exactly, split across gloo ranks and DataLoader workers with every sample once per
epoch, resumed exactly after SIGKILL, and bad members are named, skipped and counted.

The end-to-end checks run the script ``sigmae-gen build`` emits for
``tests/fixture_specs/shards_audio.yaml`` (pre-training then fine-tuning from shards).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

webdataset = pytest.importorskip("webdataset")
soundfile = pytest.importorskip("soundfile")

from components.contracts.data import tone_clip, write_pcm_wav  # noqa: E402
from components.data.audio_io import read_wav  # noqa: E402
from components.data.shards import AudioShards, expand_braces, expand_shard_pattern  # noqa: E402
from components.distributed import dist_info_from_env, init_distributed, shutdown_distributed  # noqa: E402
from components.errors import UsageError  # noqa: E402
from components.runtime import FoldSubset, ShardedEpochSampler, epoch_order_of  # noqa: E402
from components.transforms.resample import resample  # noqa: E402
from speech import require_speech_tools, say  # noqa: E402
from test_resume import _assert_same_weights, _final_weights, _train_lines, _wait_for_lines  # noqa: E402
from test_runtime_helpers import free_port, make_stage, spawn_and_join  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "tests" / "fixture_specs" / "shards_audio.yaml"
NUM_TONES, PER_SHARD = 16, 4  # 4 shards; divisible by the 2 ranks, so no sample is padded in


def wav_bytes(samples: torch.Tensor, rate: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.numpy(), rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def write_tone_shards(folder: Path, num_items: int = NUM_TONES, per_shard: int = PER_SHARD) -> str:
    """``folder/train-00000N.tar`` by ``webdataset.ShardWriter``: tone ``i`` has ``8000 + 37 i``
    samples (its length identifies it), class ``i % 3`` in ``.cls``."""
    folder.mkdir(parents=True, exist_ok=True)
    with webdataset.ShardWriter(str(folder / "train-%06d.tar"), maxcount=per_shard, verbose=0) as writer:
        for i in range(num_items):
            clip = tone_clip(300.0 + 150 * (i % 3) + 3 * i, 16000, 8000 + 37 * i)
            writer.write({"__key__": f"tone{i:03d}", "wav": wav_bytes(clip, 16000), "cls": i % 3})
    return str(folder / "train-{000000..000003}.tar")


@pytest.fixture(scope="module")
def tone_shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_tone_shards(tmp_path_factory.mktemp("tones") / "shards")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    subprocess.run([str(ROOT / ".venv" / "bin" / "sigmae-gen"), "build", str(SPEC), "-o", str(out)], check=True, capture_output=True)
    return out / "shards_audio" / "shards_audio.py"


# --------------------------------------------------------------------------- reading
def test_shards_written_by_webdataset_read_back_the_source_audio_labels_and_folds(tmp_path: Path) -> None:
    require_speech_tools()
    words, voices = ("yes", "no", "up"), ("en-us", "en-gb")
    sources = {}
    for word in words:
        for v, voice in enumerate(voices):
            sources[(word, v)] = read_wav(say(word, voice, 160, tmp_path / "speech" / f"{word}_{v}.wav"))[0]
    # keys with dots in their directory part; WAV from the file itself and lossless FLAC beside it
    with webdataset.ShardWriter(str(tmp_path / "named-%03d.tar"), maxcount=4, verbose=0) as writer:
        for (word, v), samples in sources.items():
            audio = {"wav": (tmp_path / "speech" / f"{word}_{v}.wav").read_bytes()} if v == 0 else {"flac": wav_bytes(samples, 16000, "FLAC")}
            writer.write({"__key__": f"voice.{v}/{word}", **audio, "json": {"label": word, "fold": v + 1}})
    ds = AudioShards(shards=str(tmp_path / "named-*.tar"), sample_rate=16000, clip_seconds=None)
    assert ds.class_names == sorted(words) and len(ds) == len(sources)
    assert [r.key.split(".tar/", 1)[1] for r in ds.records] == [f"voice.{v}/{w}" for w, v in sources]
    for index, (record, ((word, v), samples)) in enumerate(zip(ds.records, sources.items())):
        signal, label = ds[index]
        assert torch.equal(signal, samples), record.key  # bit-exact, WAV and FLAC alike
        assert ds.class_names[label] == word == record.category and record.fold == v + 1
    assert ds.available_folds() == [1, 2]
    clone = pickle.loads(pickle.dumps(ds))  # as a spawned DataLoader worker gets it: without the open shards
    assert torch.equal(clone[1][0], ds[1][0])
    # at another rate: resampled as the folder data sets resample
    low = AudioShards(shards=str(tmp_path / "named-*.tar"), sample_rate=8000, clip_seconds=0.1)
    assert torch.equal(low[0][0], resample(sources[("yes", 0)], 16000, 8000)[:800])


def test_class_indices_name_classes_and_classes_or_categories_name_them(tmp_path: Path, tone_shards: str) -> None:
    plain = AudioShards(shards=tone_shards, clip_seconds=None)
    assert plain.class_names == ["class_0", "class_1", "class_2"] and plain.labels() == [i % 3 for i in range(NUM_TONES)]
    assert sorted({r.fold for r in plain.records}) == [1, 2, 3, 4, 5]  # no .json fold: dealt round-robin per class
    named = AudioShards(shards=tone_shards, classes=["low", "mid", "high"], clip_seconds=None)
    assert [r.category for r in named.records[:4]] == ["low", "mid", "high", "low"]
    with webdataset.ShardWriter(str(tmp_path / "cat-%03d.tar"), maxcount=10, verbose=0) as writer:
        for i in range(4):
            writer.write({"__key__": f"k{i}", "wav": wav_bytes(tone_clip(500.0, 16000, 800), 16000), "json": {"label": i % 2, "category": f"c{i % 2}"}})
    assert AudioShards(shards=str(tmp_path / "cat-000.tar")).class_names == ["c0", "c1"]


def test_brace_glob_and_comma_patterns_expand_sorted_and_a_pattern_matching_nothing_is_an_error(tmp_path: Path) -> None:
    assert expand_braces("s-{008..011}.tar") == ["s-008.tar", "s-009.tar", "s-010.tar", "s-011.tar"]
    assert expand_braces("{a,b{1..2}}-{0..1}") == ["a-0", "a-1", "b1-0", "b1-1", "b2-0", "b2-1"]
    for name in ("a-000.tar", "a-001.tar", "a-002.tar", "b-x.tar"):
        (tmp_path / name).write_bytes(b"")
    assert expand_shard_pattern("a-{000..001}.tar", str(tmp_path)) == [str(tmp_path / "a-000.tar"), str(tmp_path / "a-001.tar")]
    both = expand_shard_pattern(f"{tmp_path}/b-*.tar, {tmp_path}/a-{{002,000}}.tar,{tmp_path}/a-000.tar")
    assert both == [str(tmp_path / n) for n in ("a-000.tar", "a-002.tar", "b-x.tar")]
    with pytest.raises(UsageError, match=r"no shard matches --data.shards 'c-\*.tar' under"):
        expand_shard_pattern("c-*.tar", str(tmp_path))
    with pytest.raises(UsageError, match=r"1 shard\(s\) .* do not exist .*a-003.tar"):
        expand_shard_pattern("a-{000..003}.tar", str(tmp_path))


def test_the_member_index_is_cached_and_a_second_opening_reads_no_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shards = write_tone_shards(tmp_path / "shards", num_items=8, per_shard=4)
    monkeypatch.setenv("SIGMAE_CACHE_DIR", str(tmp_path / "cache"))
    first = AudioShards(shards=shards.replace("000003", "000001"), clip_seconds=None)
    assert len(list((tmp_path / "cache" / "shards").glob("*.json"))) == 2  # one index per shard, in the user cache
    # Same size and mtime, other bytes: a cache hit lists the old members; a rescan would find no tar.
    path = tmp_path / "shards" / "train-000001.tar"
    stat = path.stat()
    path.write_bytes(b"\xff" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert AudioShards(shards=shards.replace("000003", "000001"), clip_seconds=None).records == first.records
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: read again
    with pytest.raises(UsageError, match="train-000001.tar: not a readable tar file"):
        AudioShards(shards=shards.replace("000003", "000001"))


# --------------------------------------------------------------------------- order
def test_epoch_order_is_shard_local_seeded_and_a_fold_subset_follows_it(tone_shards: str) -> None:
    ds = AudioShards(shards=tone_shards, shuffle_buffer=2, clip_seconds=None)
    order = ds.epoch_order(7, 0)
    assert sorted(order) == list(range(NUM_TONES)) and order == ds.epoch_order(7, 0) != ds.epoch_order(7, 1)
    shard_of = [i // PER_SHARD for i in order]
    assert sum(a != b for a, b in zip(shard_of, shard_of[1:])) <= 2 * (NUM_TONES // PER_SHARD)  # mostly sequential
    fold = FoldSubset(ds, ds.indices_of_folds([1, 2]))
    sub_order = epoch_order_of(fold)(7, 0)
    assert [fold.indices[i] for i in sub_order] == [i for i in order if i in set(fold.indices)]
    blocks = [ShardedEpochSampler(len(fold), rank=r, world_size=2, seed=7, epoch_order=epoch_order_of(fold)).shard() for r in (0, 1)]
    assert blocks[0] + blocks[1] == sub_order + sub_order[: len(sub_order) % 2]  # contiguous blocks, padded to equal counts
    whole_shards = [i // PER_SHARD for i in AudioShards(shards=tone_shards, shuffle_buffer=0).epoch_order(7, 0)]
    assert sum(a != b for a, b in zip(whole_shards, whole_shards[1:])) == NUM_TONES // PER_SHARD - 1  # no buffer: shard by shard


def _rank_worker(rank: int, world: int, port: int, shards: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # Workers fork from the rank as under torchrun (a spawned rank would spawn them: seconds each).
    torch.multiprocessing.set_start_method("fork", force=True)
    info = dist_info_from_env()
    init_distributed(info, torch.device("cpu"))
    try:
        folder = Path(out) / f"rank{rank}"
        stage = make_stage(folder, dist_info=info, smoke=False)  # not --smoke: it forbids workers
        ds = AudioShards(shards=shards, shuffle_buffer=3, clip_seconds=None)
        ds[len(ds) - 1]  # a shard open in this process before the workers fork
        seen = {
            f"epoch{epoch}": [int(n) for _, _, lengths in stage.loader(ds, 3, shuffle=True, epoch=epoch, num_workers=2) for n in lengths]
            for epoch in (0, 1)
        }
        seen["resumed"] = [int(n) for _, _, lengths in stage.loader(ds, 3, shuffle=True, epoch=1, start=5, num_workers=2) for n in lengths]
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, seen)
        if rank == 0:
            (Path(out) / "seen.json").write_text(json.dumps(gathered))
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_two_gloo_ranks_with_two_workers_each_see_every_sample_once_per_epoch(tmp_path: Path, tone_shards: str) -> None:
    spawn_and_join(_rank_worker, (2, free_port(), tone_shards, str(tmp_path)), nprocs=2, timeout=240)
    ranks = json.loads((tmp_path / "seen.json").read_text())
    every = sorted(8000 + 37 * i for i in range(NUM_TONES))
    for epoch in ("epoch0", "epoch1"):
        both = ranks[0][epoch] + ranks[1][epoch]
        assert sorted(both) == every, f"{epoch}: a sample missing or seen twice"
        for seen in (ranks[0][epoch], ranks[1][epoch]):
            shards = {(n - 8000) // 37 // PER_SHARD for n in seen}
            assert len(seen) == NUM_TONES // 2 and len(shards) <= 3, (epoch, shards)  # a rank reads about half the shards
    assert ranks[0]["epoch0"] != ranks[0]["epoch1"]
    assert [r["resumed"] for r in ranks] == [r["epoch1"][5:] for r in ranks]  # start=5 skips exactly what was seen


# --------------------------------------------------------------------------- bad members
def write_damaged_shards(folder: Path) -> str:
    """Shard 0: a good sample, garbage audio, a sample without a label, an unknown class name;
    shard 1: two good samples, then cut off inside the third one's audio."""
    folder.mkdir(parents=True, exist_ok=True)
    good = wav_bytes(tone_clip(440.0, 16000, 1600), 16000)
    with webdataset.TarWriter(str(folder / "bad-000.tar")) as writer:
        writer.write({"__key__": "ok0", "wav": good, "json": {"label": "tone"}})
        writer.write({"__key__": "noise", "wav": b"RIFF\x00\x00not a wave file at all", "json": {"label": "tone"}})
        writer.write({"__key__": "nolabel", "wav": good})
        writer.write({"__key__": "stranger", "wav": good, "json": {"label": "drum"}})
    with webdataset.TarWriter(str(folder / "bad-001.tar")) as writer:
        for key in ("ok1", "ok2", "cut"):
            writer.write({"__key__": key, "wav": good, "json": {"label": "tone", "fold": 2}})
    path = folder / "bad-001.tar"
    with tarfile.open(path) as tar:
        cut_at = tar.getmember("cut.wav").offset_data + 100
    path.write_bytes(path.read_bytes()[:cut_at])
    return str(folder / "bad-{000..001}.tar")


def test_bad_members_are_named_and_skipped_and_counted_with_skip_bad_files(tmp_path: Path) -> None:
    shards = write_damaged_shards(tmp_path / "shards")
    with pytest.warns(UserWarning, match="skipped 5 bad sample") as caught:
        ds = AudioShards(shards=shards, classes=["tone"], skip_bad_files=True, clip_seconds=None)
    assert [r.key.rsplit("/", 1)[1] for r in ds.records] == ["ok0", "ok1", "ok2"]
    assert len(ds.skipped_files) == 5  # 4 samples, and the cut shard itself (whatever followed is lost)
    message = str(caught[0].message)
    for named in ("bad-000.tar member noise.wav", "bad-000.tar member nolabel: no label", "unknown class name 'drum'",
                  "bad-001.tar member cut.wav: truncated", "bad-001.tar: damaged or truncated"):
        assert named in message, message
    with pytest.raises(UsageError, match=r"5 bad sample\(s\)[\s\S]*noise.wav[\s\S]*--data.skip_bad_files"):
        AudioShards(shards=shards, classes=["tone"])


def test_a_shard_changed_mid_run_is_skipped_member_by_member_or_named(tmp_path: Path) -> None:
    shards = write_tone_shards(tmp_path / "shards", num_items=8, per_shard=4)
    shards = shards.replace("000003", "000001")
    tolerant = AudioShards(shards=shards, skip_bad_files=True, clip_seconds=None)
    strict = AudioShards(shards=shards, clip_seconds=None)
    path = tmp_path / "shards" / "train-000000.tar"
    path.write_bytes(path.read_bytes()[:2048])  # truncated while the run reads it
    with pytest.warns(UserWarning, match="train-000000.tar: the shard changed"):
        signal, label = tolerant[0]
    assert signal.shape[-1] == 8000 + 37 * 4 and label == tolerant.records[4].label  # the next readable one stands in
    assert len(tolerant.skipped_files) == 4
    with pytest.raises(UsageError, match="train-000000.tar: the shard changed .* --data.skip_bad_files"):
        strict[1]


# --------------------------------------------------------------------------- the emitted script
def _run_script(script: Path, out: Path, *args: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(out.with_suffix(".log"), "ab")
    command = [sys.executable, str(script), "--deterministic", "--out-dir", str(out), *args]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, **popen)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path, script: Path, tone_shards: str) -> None:
    args = ("--data.shards", tone_shards)
    plain = tmp_path / "plain"
    assert _run_script(script, plain, *args).wait(timeout=300) == 0, plain.with_suffix(".log").read_text()[-3000:]
    assert _train_lines(plain) == 8 + 2  # pretrain 2 epochs x 4 steps, finetune 1 epoch x 2 steps
    killed = tmp_path / "killed"
    process = _run_script(script, killed, *args)
    _wait_for_lines(process, killed, 6, timeout=300)  # inside pre-training's second epoch
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert _run_script(script, killed, *args, "--resume").wait(timeout=300) == 0, killed.with_suffix(".log").read_text()[-3000:]
    assert "[pretrain] resumed from" in killed.with_suffix(".log").read_text()
    _assert_same_weights(_final_weights(plain), _final_weights(killed), "killed after 6 steps")


@pytest.mark.slow
def test_the_built_shards_spec_trains_under_torchrun_with_two_gloo_processes(tmp_path: Path, script: Path, tone_shards: str) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    out = tmp_path / "ddp"
    command = [torchrun, "--standalone", "--nproc_per_node=2", str(script), "--out-dir", str(out),
               "--data-dir", str(Path(tone_shards).parent), "--data.shards", "train-*.tar", "--steps", "3", "--pretrain.num_workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"]["pretrain"]["steps"] == 3, summary["steps"]["pretrain"]
    assert summary["steps"]["pretrain"]["effective_batch"] == 2 * 4
    assert time.monotonic() - started < 300


def test_the_script_exits_2_naming_the_bad_member_without_skip_bad_files(tmp_path: Path, script: Path) -> None:
    shards = write_damaged_shards(tmp_path / "shards")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(script), "--out-dir", str(out), "--data.shards", shards, "--data.classes", "tone"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: audio_shards: 5 bad sample(s)" in result.stderr and "bad-000.tar member noise.wav" in result.stderr
    assert "Traceback" not in result.stderr
