"""A folder of WAV files vs WebDataset tar shards: samples/s, bytes read per sample, data wait.

    .venv/bin/python bench/data.py                 # 2,000 clips of 1-2 s, 0/2/4 workers (make bench-data)
    .venv/bin/python bench/data.py --quick         # 200 clips, 0/2 workers, a short training run: seconds
    .venv/bin/python bench/data.py --work /tmp/bd  # keep (and reuse) the clips and the shards

1. Clips: short real speech (espeak-ng + sox: words spoken by several voices, 22.05 kHz 16-bit
   mono, silence trimmed) mixed into ``--clips`` clips of ~1-2 s (two words, a gain, a little
   noise) and written once as ``<work>/folder/<word>/<i>.wav``; tones when espeak-ng is missing.
2. Shards: the catalog's ``shard`` recipe step (``components/recipes/shard.py``, run through the
   runtime as a script runs it) writes that folder once into ``<work>/shards`` at 16 kHz.
3. Epochs: every clip once, through the runtime's own sampler (``ShardedEpochSampler``, with the
   shards' shard-local ``epoch_order``) and a DataLoader with 0, 2 and 4 workers, batch
   ``--batch``, as a training run reads them (no model). Sources:
     folder, cache off   ``audio_folder`` with ``cache: false``: decode + resample 22.05 -> 16 kHz every time
     folder, cache on    ``audio_folder`` with its decoded-audio cache (float32 at 16 kHz per clip,
                         under ``$SIGMAE_CACHE_DIR``, here ``<work>/cache``), filled by a first epoch
     shards              ``audio_shards`` over the shards (member index cached under the same dir)
   each with a cold page cache (every file the source reads is fsync'ed and dropped with
   ``posix_fadvise(POSIX_FADV_DONTNEED)`` before the epoch; /proc/sys/vm/drop_caches is not
   used: it would drop every other process's pages too) and warm (the same epoch right after).
   Bytes read per sample: the files' bytes over the clips (what an epoch must read), and with 0
   workers the bytes the process read (``rchar``) and fetched from storage (``read_bytes``,
   /proc/self/io: near the file bytes when the cold epoch really was cold).
4. Data wait: a short MAE pre-training run of the catalog's ``tiny`` AudioMAE++ (log-mel 80 x
   200) from the shards and from the folder (cache on), 2 workers: the share of step time spent
   waiting for the loader, from the ``metrics.jsonl`` the engine writes.

Goals (issue 14): shards >= 3x the folder's samples/s with a cold cache; data wait <= 5 %.
The machine is shared: absolute figures drift with the load; the ratios within one run do not
drift as much. Results go to ``<work>/data_results.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from components.data.audio_folder import AudioFolder  # noqa: E402
from components.data.shards import AudioShards  # noqa: E402
from components.models.audiomae_pp import AudioMAEPlusPlus  # noqa: E402
from components.recipes.pretrain import mae_pretrain  # noqa: E402
from components.recipes.shard import write_shards  # noqa: E402
from components.runtime import (  # noqa: E402
    Pipeline,
    RunOptions,
    ShardedEpochSampler,
    Step,
    collate_signals,
    epoch_order_of,
    run_pipeline,
)
from components.transforms.spectral import LogMel  # noqa: E402

WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "go", "on", "off")
VOICES = ("en-us", "en-gb", "en-us+f3", "en-sc")
SOURCE_RATE = (
    22050  # espeak-ng's own rate: the folder is resampled when read, the shards once
)
RATE = 16000
SHARD_GOAL = 3.0
DATA_WAIT_GOAL = 0.05


# --------------------------------------------------------------------------- the clips
def speech_words(scratch: Path, voices: tuple[str, ...]) -> dict[str, list[list[int]]]:
    """16-bit samples of each word by each voice (espeak-ng, trimmed by sox); {} without the tools."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        return {}
    words: dict[str, list[list[int]]] = {}
    for word in WORDS:
        for voice in voices:
            out = scratch / f"{word}_{voice.replace('+', '_')}.wav"
            spoken = subprocess.run(
                ["espeak-ng", "-v", voice, "--stdout", word],
                check=True,
                capture_output=True,
            ).stdout
            trim = [
                "silence",
                "1",
                "0.02",
                "1%",
                "reverse",
                "silence",
                "1",
                "0.02",
                "1%",
                "reverse",
            ]
            subprocess.run(
                [
                    "sox",
                    "-t",
                    "wav",
                    "-",
                    "-b",
                    "16",
                    "-c",
                    "1",
                    "-r",
                    str(SOURCE_RATE),
                    str(out),
                    *trim,
                ],
                input=spoken,
                check=True,
                capture_output=True,
            )
            with wave.open(str(out), "rb") as handle:
                words.setdefault(word, []).append(
                    list(array.array("h", handle.readframes(handle.getnframes())))
                )
    return words


def tone_words() -> dict[str, list[list[int]]]:
    """Stand-in "words" (tone bursts) when espeak-ng or sox is missing."""
    words = {}
    for k, word in enumerate(WORDS):
        n = int(0.5 * SOURCE_RATE)
        pitch = 200.0 * 1.2**k
        words[word] = [
            [
                int(
                    8000
                    * math.sin(2 * math.pi * pitch * (1 + 0.02 * v) * t / SOURCE_RATE)
                )
                for t in range(n)
            ]
            for v in range(len(VOICES))
        ]
    return words


def make_clips(
    folder: Path, clips: int, voices: tuple[str, ...] = VOICES, seed: int = 0
) -> dict[str, Any]:
    """``clips`` WAV files of ~1-2 s in ``folder/<word>/``, written once (reused when complete)."""
    marker = folder / "done.json"
    if marker.is_file() and json.loads(marker.read_text()).get("clips") == clips:
        return json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        words = speech_words(Path(scratch), voices)
    kind = "espeak-ng speech" if words else "tone bursts (espeak-ng or sox missing)"
    words = words or tone_words()
    tensors = {
        w: [torch.tensor(v, dtype=torch.float32) for v in takes]
        for w, takes in words.items()
    }
    rng = random.Random(seed)
    noise = torch.Generator().manual_seed(seed)
    total_samples = 0
    gap = torch.zeros(int(0.08 * SOURCE_RATE))
    for i in range(clips):
        word = WORDS[i % len(WORDS)]
        parts = [rng.choice(tensors[word]), gap, rng.choice(tensors[rng.choice(WORDS)])]
        while sum(len(p) for p in parts) < SOURCE_RATE:  # at least 1 s
            parts += [gap, rng.choice(tensors[word])]
        samples = torch.cat(parts)[: 2 * SOURCE_RATE]
        samples = rng.uniform(0.5, 1.0) * samples + 30 * torch.randn(
            len(samples), generator=noise
        )
        pcm = samples.round().clamp(-32768, 32767).to(torch.int16)
        (folder / word).mkdir(exist_ok=True)
        with wave.open(str(folder / word / f"{i:05d}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SOURCE_RATE)
            out.writeframes(array.array("h", pcm.tolist()).tobytes())
        total_samples += len(pcm)
    info = {
        "clips": clips,
        "kind": kind,
        "seconds_of_audio": total_samples / SOURCE_RATE,
        "mean_clip_s": total_samples / SOURCE_RATE / clips,
        "made_in_s": time.perf_counter() - started,
    }
    marker.write_text(json.dumps(info))
    return info


# --------------------------------------------------------------------------- shards, via the shard step
@dataclass
class FolderData:
    root: str = "data/audio"
    sample_rate: int = RATE
    folds: list[int] | None = None
    num_folds: int = 5
    clip_seconds: float | None = None
    cache: bool = False


@dataclass
class ShardSettings:
    output: str | None = None
    prefix: str = "clips"
    max_items: int | None = 250
    max_megabytes: float | None = 1024.0
    overwrite: bool = False
    num_workers: int = 2


@dataclass
class LogMelSettings:
    sample_rate: int = RATE
    n_mels: int = 80
    target_frames: int | None = 200


@dataclass
class TinyModel:
    preset: Literal["tiny", "base", "large"] = "tiny"
    img_size: tuple[int, int] = (200, 80)
    patch_size: tuple[int, int] = (4, 16)
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    decoder_embed_dim: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None


# --quick: a 1-block 32-d model, so the smoke test's training runs take seconds
QUICK_MODEL = [
    "--model.embed_dim",
    "32",
    "--model.depth",
    "1",
    "--model.num_heads",
    "2",
    "--model.decoder_embed_dim",
    "32",
    "--model.decoder_depth",
    "1",
    "--model.decoder_num_heads",
    "2",
]


@dataclass
class PretrainSettings:
    epochs: int = 1
    batch_size: int = 16
    lr: float | None = 1e-4
    warmup_epochs: float = 0.0
    num_workers: int = 2
    log_every: int = 1
    plot_every: int = 0
    checkpoint_every: int = 100000


@dataclass
class ShardingConfig:
    run: RunOptions = field(default_factory=RunOptions)
    data: FolderData = field(default_factory=FolderData)
    transform: LogMelSettings = field(default_factory=LogMelSettings)
    model: TinyModel = field(default_factory=TinyModel)
    shard: ShardSettings = field(default_factory=ShardSettings)


@dataclass
class ShardData:
    shards: str = "data/shards/*.tar"
    sample_rate: int = RATE
    folds: list[int] | None = None
    clip_seconds: float | None = None
    shuffle_buffer: int = 1000


@dataclass
class FolderTrainingConfig:
    run: RunOptions = field(default_factory=RunOptions)
    data: FolderData = field(default_factory=FolderData)
    transform: LogMelSettings = field(default_factory=LogMelSettings)
    model: TinyModel = field(default_factory=TinyModel)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)


@dataclass
class ShardTrainingConfig:
    run: RunOptions = field(default_factory=RunOptions)
    data: ShardData = field(default_factory=ShardData)
    transform: LogMelSettings = field(default_factory=LogMelSettings)
    model: TinyModel = field(default_factory=TinyModel)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)


def pipeline_of(data: type, steps: tuple[Step, ...]) -> Pipeline:
    return Pipeline(
        name="bench_data",
        spec_hash="0" * 64,
        data=data,
        transform=LogMel,
        model=AudioMAEPlusPlus,
        steps=steps,
    )


def write_shards_once(
    folder: Path, shards: Path, work: Path, clips: int
) -> dict[str, Any]:
    """The folder written into shards by the ``shard`` step (reused when its manifest matches)."""
    manifest = shards / "manifest.json"
    if (
        manifest.is_file()
        and json.loads(manifest.read_text()).get("num_items") == clips
    ):
        return {"reused": True, **summary_of(manifest)}
    shutil.rmtree(shards, ignore_errors=True)
    argv = [
        "--device",
        "cpu",
        "--out-dir",
        str(work / "shard_run"),
        "--data-dir",
        str(folder),
        "--shard.output",
        str(shards),
        "--shard.max_items",
        str(max(1, clips // 8)),
    ]
    started = time.perf_counter()
    code = run_pipeline(
        pipeline_of(AudioFolder, (Step("shard", write_shards),)), ShardingConfig, argv
    )
    if code != 0:
        raise SystemExit(f"bench/data.py: the shard step exited {code}")
    return {
        "reused": False,
        "seconds": time.perf_counter() - started,
        **summary_of(manifest),
    }


def summary_of(manifest: Path) -> dict[str, Any]:
    data = json.loads(manifest.read_text())
    return {
        key: data[key]
        for key in ("num_items", "total_seconds", "sample_rate", "pattern")
        if key in data
    } | {
        "shards": len(data.get("shards", [])),
        "bytes": sum(s.get("bytes", 0) for s in data.get("shards", [])),
    }


# --------------------------------------------------------------------------- epochs
def drop_from_page_cache(paths: list[Path]) -> None:
    """Evict these files' pages (fsync first: dirty pages cannot be dropped)."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def process_io() -> dict[str, int]:
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return {}
    return {key: int(value) for key, value in (line.split(": ") for line in lines)}


def files_of(directory: Path, suffix: str) -> list[Path]:
    return sorted(p for p in directory.rglob(f"*{suffix}") if p.is_file())


def epoch(dataset: Any, batch: int, workers: int) -> tuple[float, int]:
    """Seconds to read every clip once as a training run would (worker start-up included)."""
    sampler = ShardedEpochSampler(
        len(dataset), seed=0, epoch=0, shuffle=True, epoch_order=epoch_order_of(dataset)
    )
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_signals,
    )
    seen = 0
    started = time.perf_counter()
    for signals, labels, lengths in loader:
        seen += int(labels.shape[0])
    return time.perf_counter() - started, seen


@dataclass
class Source:
    name: str
    cache: str  # what "cache" means for this source, said in the table
    make: Any  # () -> data set
    files: Any  # () -> the files an epoch reads


def measure(source: Source, batch: int, workers: list[int]) -> list[dict[str, Any]]:
    rows = []
    for count in workers:
        for state in ("cold", "warm"):
            dataset = (
                source.make()
            )  # opened afresh: an index or handles kept from before would hide the cold read
            files = source.files()
            if state == "cold":
                drop_from_page_cache(files)
            before = process_io()
            seconds, seen = epoch(dataset, batch, count)
            after = process_io()
            row = {
                "source": source.name,
                "cache": source.cache,
                "page_cache": state,
                "workers": count,
                "clips": seen,
                "seconds": seconds,
                "samples_per_s": seen / seconds,
                "file_bytes_per_sample": sum(p.stat().st_size for p in files) / seen,
            }
            if count == 0 and before:  # the main process did all the reading
                row["rchar_per_sample"] = (after["rchar"] - before["rchar"]) / seen
                row["storage_bytes_per_sample"] = (
                    after["read_bytes"] - before["read_bytes"]
                ) / seen
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def format_row(r: dict[str, Any]) -> str:
    io = (
        f"{r['rchar_per_sample'] / 1024:9.1f} {r['storage_bytes_per_sample'] / 1024:9.1f}"
        if "rchar_per_sample" in r
        else f"{'-':>9} {'-':>9}"
    )
    return (
        f"{r['source']:<8} {r['cache']:<22} {r['page_cache']:<5} {r['workers']:>7} {r['samples_per_s']:10.1f} "
        f"{r['seconds']:8.2f} {r['file_bytes_per_sample'] / 1024:9.1f} {io}"
    )


# --------------------------------------------------------------------------- data wait in training
def data_wait(
    pipeline: Pipeline, config: type, argv: list[str], out_dir: Path, warmup: int
) -> dict[str, Any]:
    code = run_pipeline(pipeline, config, [*argv, "--out-dir", str(out_dir)])
    if code != 0:
        raise SystemExit(f"bench/data.py: the training run exited {code}")
    records = [
        json.loads(line)
        for line in (out_dir / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    train = [r for r in records if r.get("kind") == "train" and "data_wait_share" in r]
    kept = train[warmup:] if len(train) > warmup else train
    step_s = [
        1.0 / r["samples_per_s"] for r in kept
    ]  # per sample; the batch is constant
    return {
        "steps": len(kept),
        "data_wait_share": sum(r["data_wait_share"] * s for r, s in zip(kept, step_s))
        / sum(step_s),
        "samples_per_s": statistics.median(r["samples_per_s"] for r in kept),
    }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clips", type=int, default=None, help="clips (default 2000; --quick: 200)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200 clips, 0 and 2 workers, 6 training steps: a smoke test",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder for clips, shards and caches (default: a temporary one)",
    )
    parser.add_argument(
        "--workers",
        default=None,
        help="comma-separated DataLoader worker counts (default 0,2,4; --quick 0,2)",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="steps of the data-wait runs (default 12; --quick 6)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of this process (workers use 1)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default <work>/data_results.json)",
    )
    args = parser.parse_args(argv)
    clips = args.clips or (200 if args.quick else 2000)
    workers = [
        int(w) for w in (args.workers or ("0,2" if args.quick else "0,2,4")).split(",")
    ]
    train_steps = args.train_steps or (6 if args.quick else 12)
    if clips < 8 or args.batch < 1 or min(workers) < 0 or train_steps < 3:
        print(
            "bench/data.py: --clips must be >= 8, --batch >= 1, --workers >= 0 and --train-steps >= 3",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    folder, shards, cache = work / "folder", work / "shards", work / "cache"
    os.environ["SIGMAE_CACHE_DIR"] = str(
        cache
    )  # every cache of the data sets here, not the user's
    started = time.perf_counter()
    made = make_clips(folder, clips, VOICES[:2] if args.quick else VOICES)
    print(
        f"clips: {made['clips']} x {made['mean_clip_s']:.2f} s of {made['kind']} at {SOURCE_RATE} Hz in {folder}"
    )
    sharded = write_shards_once(folder, shards, work, clips)
    print(
        f"shards: {sharded.get('shards')} files, {sharded.get('bytes', 0) / 2**20:.1f} MiB at {RATE} Hz in {shards}"
        + (
            " (reused)"
            if sharded["reused"]
            else f", written by the shard step in {sharded['seconds']:.1f} s"
        )
    )
    audio_cache = cache / "folder_audio"

    def fill_cache() -> None:
        shutil.rmtree(audio_cache, ignore_errors=True)
        cached = AudioFolder(
            root=str(folder),
            sample_rate=RATE,
            clip_seconds=None,
            cache=True,
            cache_dir=str(audio_cache),
        )
        for i in range(len(cached)):
            cached[i]

    fill_started = time.perf_counter()
    fill_cache()
    fill_s = time.perf_counter() - fill_started
    sources = [
        Source(
            "folder",
            "decoded cache off",
            lambda: AudioFolder(
                root=str(folder), sample_rate=RATE, clip_seconds=None, cache=False
            ),
            lambda: files_of(folder, ".wav"),
        ),
        Source(
            "folder",
            "decoded cache on",
            lambda: AudioFolder(
                root=str(folder),
                sample_rate=RATE,
                clip_seconds=None,
                cache=True,
                cache_dir=str(audio_cache),
            ),
            lambda: files_of(
                audio_cache, ".f32"
            ),  # the WAVs are only stat'ed (the cache key)
        ),
        Source(
            "shards",
            "member index cached",
            lambda: AudioShards(
                shards=str(shards / "*.tar"), sample_rate=RATE, clip_seconds=None
            ),
            lambda: files_of(shards, ".tar") + files_of(cache, ".json"),
        ),
    ]
    print(
        f"decoded-audio cache of the folder filled in {fill_s:.1f} s ({clips / fill_s:.0f} clips/s: decode + resample + write)"
    )
    print(
        f"batch {args.batch}; page cache dropped with posix_fadvise(POSIX_FADV_DONTNEED) per file (cold) or not (warm)"
    )
    print(
        f"{'source':<8} {'cache':<22} {'page':<5} {'workers':>7} {'samples/s':>10} {'epoch s':>8} {'file KiB':>9} {'rchar KiB':>9} {'disk KiB':>9}"
    )
    rows = [row for source in sources for row in measure(source, args.batch, workers)]

    by = {(r["source"], r["cache"], r["page_cache"], r["workers"]): r for r in rows}
    ratios = []
    for count in workers:
        shard_row = {
            state: by[("shards", "member index cached", state, count)]
            for state in ("cold", "warm")
        }
        for cache_name in ("decoded cache off", "decoded cache on"):
            for state in ("cold", "warm"):
                ratios.append(
                    {
                        "workers": count,
                        "page_cache": state,
                        "folder_cache": cache_name,
                        "shards_over_folder": shard_row[state]["samples_per_s"]
                        / by[("folder", cache_name, state, count)]["samples_per_s"],
                    }
                )
    print("\nshards / folder samples/s (same run):")
    print(
        f"{'workers':>7} {'page':<5} {'vs folder, cache off':>21} {'vs folder, cache on':>20}"
    )
    for count in workers:
        for state in ("cold", "warm"):
            pair = [
                r["shards_over_folder"]
                for r in ratios
                if r["workers"] == count and r["page_cache"] == state
            ]
            print(f"{count:>7} {state:<5} {pair[0]:20.2f}x {pair[1]:19.2f}x")

    train_argv = [
        "--device",
        "cpu",
        "--dtype",
        "auto",
        "--steps",
        str(train_steps),
        "--pretrain.num_workers",
        "2",
        "--pretrain.batch_size",
        str(8 if args.quick else 16),
        *(QUICK_MODEL if args.quick else []),
    ]
    model_name = (
        "a 1-block 32-d AudioMAE++ (--quick)"
        if args.quick
        else "the tiny AudioMAE++ preset"
    )
    waits = {
        "shards": data_wait(
            pipeline_of(AudioShards, (Step("pretrain", mae_pretrain),)),
            ShardTrainingConfig,
            [*train_argv, "--data.shards", str(shards / "*.tar")],
            work / "train_shards",
            warmup=2,
        ),
        "folder, decoded cache on": data_wait(
            pipeline_of(AudioFolder, (Step("pretrain", mae_pretrain),)),
            FolderTrainingConfig,
            [*train_argv, "--data-dir", str(folder), "--data.cache", "true"],
            work / "train_folder",
            warmup=2,
        ),
    }
    print(
        f"\ndata wait of a pre-training step of {model_name} (log-mel 200 x 80, 2 workers, {train_steps} steps, first 2 dropped):"
    )
    for name, wait in waits.items():
        print(
            f"  {name:<26} {100 * wait['data_wait_share']:5.1f} % of step time ({wait['samples_per_s']:.1f} samples/s)"
        )

    def best(source: str, cache_name: str) -> float:
        """Cold samples/s at the source's best worker count (what a user would pick)."""
        return max(
            by[(source, cache_name, "cold", count)]["samples_per_s"]
            for count in workers
        )

    shards_cold = best("shards", "member index cached")
    goals = [
        {
            "goal": f"shards >= {SHARD_GOAL:g}x the folder's samples/s, cold page cache, folder {cache_name} (each at its best worker count)",
            "value": shards_cold / best("folder", cache_name),
            "met": shards_cold / best("folder", cache_name) >= SHARD_GOAL,
        }
        for cache_name in ("decoded cache off", "decoded cache on")
    ]
    goals += [
        {
            "goal": f"data wait <= {100 * DATA_WAIT_GOAL:.0f} % of step time (shards)",
            "value": waits["shards"]["data_wait_share"],
            "met": waits["shards"]["data_wait_share"] <= DATA_WAIT_GOAL,
        },
    ]
    print()
    for goal in goals:
        print(
            f"  {'met    ' if goal['met'] else 'NOT met'}  {goal['goal']}: {goal['value']:.3g}"
        )
    out = args.out or work / "data_results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "clips": made,
        "shards": sharded,
        "folder_cache_fill_s": fill_s,
        "batch": args.batch,
        "workers": workers,
        "cold_method": "posix_fadvise(POSIX_FADV_DONTNEED) per file, after fsync",
        "rows": rows,
        "ratios": ratios,
        "data_wait": waits,
        "data_wait_model": model_name,
        "goals": goals,
        "seconds": time.perf_counter() - started,
        "torch_threads": args.threads,
    }
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
