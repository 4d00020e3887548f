"""Front-end figures: batched kaldi_fbank vs a per-clip loop, and ESC-50 decode time per epoch.

    .venv/bin/python bench/frontend.py                      # CPU, and the GPU when there is one
    .venv/bin/python bench/frontend.py --clips 2000 --root data/ESC-50-master   # a real ESC-50

1. ``kaldi_fbank`` on 64 clips of 5 s at 16 kHz and 44.1 kHz: one batched call vs a loop over
   clips, clips per second (CUDA timings are synchronised).
2. Reading an ESC-50 epoch (decode 44.1 kHz WAV + resample to 16 kHz) with a cold cache and a
   warm one. Without ``--root`` it writes an ESC-50-shaped folder of ``--clips`` 5 s clips to
   a temporary directory and scales the time to 2,000 clips. The goal: after the first epoch,
   loading a batch costs <= 5 % of a training step (``--step-ms`` gives the step time).
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import math
import sys
import tempfile
import time
import wave
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.data import ESC50  # noqa: E402
from components.transforms import KaldiFbank  # noqa: E402
from components.transforms.kaldi import kaldi_fbank_features  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up: caches, kernels, allocator
    sync(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def bench_fbank(device: torch.device, clips: int, repeats: int, rates: tuple[int, ...] = (16000, 44100)) -> list[dict]:
    """Prints one line per sample rate and returns the figures (``bench/gpu.py`` records them)."""
    rows = []
    for rate in rates:
        transform = KaldiFbank(sample_rate=rate, target_frames=512).to(device)
        waves = 0.1 * torch.randn(clips, 5 * rate, generator=torch.Generator().manual_seed(0)).to(device)
        batched = best_time(lambda: transform(waves), repeats, device)
        looped = best_time(lambda: [transform(waves[i : i + 1]) for i in range(clips)], repeats, device)
        centred = waves - waves.mean(dim=1, keepdim=True)
        one_call = best_time(lambda: kaldi_fbank_features(centred, rate), repeats, device)
        print(
            f"kaldi_fbank {device.type:4s} {rate / 1000:>4.1f} kHz, {clips} x 5 s: batched {batched * 1e3:8.1f} ms"
            f" ({clips / batched:8.0f} clips/s) | per-clip loop {looped * 1e3:8.1f} ms ({clips / looped:8.0f} clips/s)"
            f" | speed-up {looped / batched:5.2f}x | unchunked single call {one_call * 1e3:8.1f} ms"
        )
        rows.append(
            {"device": device.type, "sample_rate": rate, "clips": clips, "clip_seconds": 5.0, "batched_s": batched,
             "per_clip_loop_s": looped, "single_call_s": one_call, "batched_clips_per_s": clips / batched,
             "per_clip_loop_clips_per_s": clips / looped}
        )
    return rows


def write_fake_esc50(root: Path, clips: int) -> None:
    """ESC-50-shaped folder of 5 s, 44.1 kHz, 16-bit clips (noise + tone), written fast."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = []
    t = torch.arange(5 * 44100) / 44100
    for i in range(clips):
        target = i % 50
        signal = 0.3 * torch.sin(2 * math.pi * (100 + 40 * target) * t) + 0.05 * torch.randn(t.shape[0])
        pcm = (signal.clamp(-1, 1) * 32767).to(torch.int16)
        name = f"{i % 5 + 1}-{i}-A-{target}.wav"
        with wave.open(str(root / "audio" / name), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(44100)
            out.writeframes(ctypes.string_at(pcm.data_ptr(), 2 * pcm.numel()))
        rows.append([name, i % 5 + 1, target, f"class{target:02d}", "False", str(i), "A"])
    with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)


def bench_epoch(root: Path | None, clips: int, step_ms: float | None, batch: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        if root is None:
            root = Path(scratch) / "ESC-50-master"
            write_fake_esc50(root, clips)
        cache = Path(scratch) / "cache"
        start = time.perf_counter()
        dataset = ESC50(root=str(root), sample_rate=16000, cache_dir=str(cache))
        index_time = time.perf_counter() - start
        count = min(clips, len(dataset))
        scale = 2000 / count
        times = []
        for _ in ("cold", "warm"):
            start = time.perf_counter()
            for i in range(count):
                dataset[i]
            times.append(time.perf_counter() - start)
        uncached = ESC50(root=str(root), sample_rate=16000, cache=False)
        start = time.perf_counter()
        for i in range(count):
            uncached[i]
        no_cache = time.perf_counter() - start
        print(f"ESC-50 index (CSV + {len(dataset)} WAV headers): {index_time * 1e3:.0f} ms")
        for label, seconds in (("cold cache", times[0]), ("warm cache", times[1]), ("no cache", no_cache)):
            per_batch = seconds / count * batch * 1e3
            line = f"ESC-50 epoch, {label:10s}: {seconds * scale:6.2f} s per 2000 clips ({seconds / count * 1e3:6.2f} ms/clip, {per_batch:7.1f} ms per batch of {batch})"
            if step_ms:
                line += f" = {100 * per_batch / step_ms:5.1f} % of a {step_ms:g} ms step"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200, help="clips to time for the epoch figures (scaled to 2000)")
    parser.add_argument("--fbank-clips", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="a real ESC-50-master folder (default: write a fake one)")
    parser.add_argument("--step-ms", type=float, default=None, help="training step time to compare data time with")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-epoch", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        bench_fbank(device, args.fbank_clips, args.repeats)
    if not args.skip_epoch:
        bench_epoch(args.root, args.clips, args.step_ms, args.batch)


if __name__ == "__main__":
    main()
