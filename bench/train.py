"""Training-loop throughput of the emitted runtime: steps/s, data-wait share, MFU, resume overhead.

    python bench/train.py                         # CPU: smoke and tiny configurations
    python bench/train.py --device cuda           # GPU: adds bf16 + torch.compile rows with MFU
    python bench/train.py --only smoke --steps 20

Each row runs the real ``run_pipeline`` (MAE pre-training, then fine-tuning) on the catalog's
``synthetic_audio`` data, ``log_mel`` front end and ``audiomae++`` model, with ``--steps`` as
the cap, and reads per-step figures back from ``metrics.jsonl`` (the first ``--warmup`` steps
dropped: allocator warm-up, compilation). Printed per row and stage: median optimizer steps/s
and samples/s, the share of step time spent waiting for the data loader, model FLOPs per step
(torch.utils.flop_counter, fwd+bwd), achieved TFLOP/s and MFU against the card's bf16 dense
peak, and on CPU ``loop/bare``: the loop's CPU seconds per pre-training step (front end and
loading included) over a bare fwd+bwd+AdamW step on ready features. CPU time, not wall time,
because on a shared machine other processes stretch wall time at random: the ratio is the
runtime's own overhead. Then the resume overhead of the tiny model: checkpoint size, time to write one (RNG
gather, state dicts, atomic write + fsync) and to restore one (safe load, weights, optimizer).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from components.run_checkpoint import Checkpointer, load_checkpoint_file, load_model_weights  # noqa: E402
from components.data.synthetic import SyntheticAudio  # noqa: E402
from components.distributed import DistInfo  # noqa: E402
from components.metrics import read_metrics  # noqa: E402
from components.models.audiomae_pp import AudioMAEPlusPlus  # noqa: E402
from components.recipes import finetune, mae_pretrain  # noqa: E402
from components.loop_support import gather_rng_states  # noqa: E402
from components.recipes.engine import param_groups_weight_decay  # noqa: E402
from components.objectives import MAEObjective  # noqa: E402
from components.runtime import Pipeline, RunOptions, Step, cpu_has_native_bf16, run_pipeline  # noqa: E402
from components.transforms.spectral import LogMel  # noqa: E402

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "T4": 65.0, "V100": 125.0}

# name -> (clip samples at 16 kHz, frames, model overrides, CPU batch, GPU batch)
CONFIGS: dict[str, tuple[int, int, dict[str, Any], int, int]] = {
    "smoke": (8000, 48, {"depth": 2, "decoder_depth": 1}, 4, 64),
    "tiny": (32000, 200, {}, 8, 128),
}


@dataclass
class DataConfig:
    num_classes: int = 10
    num_items: int = 64
    num_samples: int = 8000
    sample_rate: int = 16000


@dataclass
class TransformConfig:
    sample_rate: int = 16000
    n_mels: int = 80
    target_frames: int | None = 48


@dataclass
class ModelConfig:
    preset: str = "tiny"
    img_size: tuple[int, int] = (48, 80)
    patch_size: tuple[int, int] = (4, 16)
    depth: int | None = None
    decoder_depth: int | None = None


@dataclass
class PretrainConfig:
    epochs: int = 1000
    batch_size: int = 4
    num_workers: int = 2
    checkpoint_every: int = 100000
    log_every: int = 1


@dataclass
class FinetuneConfig:
    epochs: int = 1000
    batch_size: int = 4
    num_workers: int = 2
    checkpoint_every: int = 100000
    log_every: int = 1
    pretrained: bool = False


@dataclass
class Config:
    run: RunOptions = field(default_factory=RunOptions)
    data: DataConfig = field(default_factory=DataConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


PIPELINE = Pipeline(
    name="bench_train", spec_hash="0" * 64, data=SyntheticAudio, transform=LogMel, model=AudioMAEPlusPlus,
    steps=(Step("pretrain", mae_pretrain), Step("finetune", finetune)),
)


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_TFLOPS.items() if key in name), None)


def pretrain_flops(config_name: str, batch: int, device: torch.device) -> float:
    """Model FLOPs of one MAE fwd+bwd at this batch (mask ratio as configured: 0.8)."""
    from torch.utils.flop_counter import FlopCounterMode

    samples, frames, overrides, _, _ = CONFIGS[config_name]
    model = AudioMAEPlusPlus(preset="tiny", img_size=(frames, 80), patch_size=(4, 16), **overrides).to(device)
    x = torch.randn(batch, 1, frames, 80, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = MAEObjective(model)(x, torch.zeros(batch, dtype=torch.long, device=device))
        loss.backward()
    return float(counter.get_total_flops())


def raw_pretrain_step_s(config_name: str, batch: int, device: torch.device, dtype: str, steps: int, warmup: int) -> float:
    """Median CPU seconds of a bare fwd+bwd+AdamW step on ready features: the floor the loop is measured against."""
    samples, frames, overrides, _, _ = CONFIGS[config_name]
    model = AudioMAEPlusPlus(preset="tiny", img_size=(frames, 80), patch_size=(4, 16), **overrides).to(device)
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    x = torch.randn(batch, 1, frames, 80, device=device)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    times = []
    for _ in range(steps):
        start = time.process_time()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, _, _ = model(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.process_time() - start)
    return statistics.median(times[warmup:])


def run_row(
    config_name: str, device: str, dtype: str, compile_: bool, steps: int, warmup: int, workers: int, log_every: int = 1
) -> dict[str, Any]:
    samples, frames, overrides, cpu_batch, gpu_batch = CONFIGS[config_name]
    batch = gpu_batch if device.startswith("cuda") else cpu_batch
    out_dir = Path(tempfile.mkdtemp(prefix=f"bench_train_{config_name}_"))
    argv = [
        "--device", device, "--dtype", dtype, "--compile", str(compile_), "--steps", str(steps), "--out-dir", str(out_dir),
        "--data.num_samples", str(samples), "--data.num_items", str(max(64, batch * (steps + 2))),
        "--transform.target_frames", str(frames), "--model.img_size", str(frames), "80",
        "--pretrain.batch_size", str(batch), "--finetune.batch_size", str(batch),
        "--pretrain.num_workers", str(workers), "--finetune.num_workers", str(workers),
        "--pretrain.log_every", str(log_every), "--finetune.log_every", str(log_every),
    ]
    for key, value in overrides.items():
        argv += [f"--model.{key}", str(value)]
    started = time.perf_counter()
    code = run_pipeline(PIPELINE, Config, argv)
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{config_name}: run_pipeline exited {code}")
    rows = {}
    for stage in ("pretrain", "finetune"):
        records = [r for r in read_metrics(out_dir / "metrics.jsonl", stage) if r["kind"] == "train"][warmup:]
        rate = statistics.median(r["samples_per_s"] for r in records)
        rows[stage] = {
            "steps_per_s": rate / batch,
            "samples_per_s": rate,
            "data_wait_share": statistics.mean(r["data_wait_share"] for r in records),
            "cpu_s_per_step": statistics.median(r["cpu_s_per_step"] for r in records),
        }
    return {"batch": batch, "wall_s": wall, **rows}


def resume_overhead(device: torch.device) -> dict[str, float]:
    """Write and restore a tiny-model pre-training checkpoint (weights, AdamW state, RNG)."""
    model = AudioMAEPlusPlus(preset="tiny").to(device)
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, 0.05), lr=1e-4)
    loss, _, _ = model(torch.randn(2, 1, 200, 80, device=device))
    loss.backward()
    optimizer.step()
    with tempfile.TemporaryDirectory() as folder:
        checkpointer = Checkpointer(Path(folder), spec_name="bench", spec_hash="0", model_config={})
        start = time.perf_counter()
        path = checkpointer.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": gather_rng_states(DistInfo())}, step=1)
        save_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 2**20
        start = time.perf_counter()
        payload = load_checkpoint_file(checkpointer.last_path)
        load_model_weights(model, payload, checkpointer.last_path)
        optimizer.load_state_dict(payload["optimizer"])
        restore_s = time.perf_counter() - start
    return {"size_mb": size_mb, "save_s": save_s, "restore_s": restore_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS), help="configurations to run (default: all)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per stage")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the figures")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="data loader workers (0: load in the main process)")
    parser.add_argument("--log-every", type=int, default=1, help="steps per metrics record (the loop syncs with the device at these)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = [("fp32", False)]
    if device.type == "cuda":
        variants += [("bf16", False), ("bf16", True)]
    elif cpu_has_native_bf16():  # what --dtype auto picks on this CPU
        variants += [("bf16", False)]
    peak = peak_tflops(device)
    print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, {args.threads} threads, {args.steps} steps per stage ({args.warmup} warm-up)")
    header = (f"{'config':8} {'dtype':5} {'compile':7} {'stage':9} {'batch':>5} {'steps/s':>8} {'samples/s':>10} "
              f"{'data wait':>9} {'TFLOP/s':>8} {'MFU':>6} {'loop/bare':>9}")
    print(header)
    print("-" * len(header))
    for name in args.only or list(CONFIGS):
        for dtype, compile_ in variants:
            row = run_row(name, args.device, dtype, compile_, args.steps, args.warmup, args.workers, args.log_every)
            flops = pretrain_flops(name, row["batch"], device)
            # The same step without the runtime (no loader, transform, logging), timed right after.
            bare = raw_pretrain_step_s(name, row["batch"], device, dtype, args.steps, args.warmup)
            for stage in ("pretrain", "finetune"):
                figures = row[stage]
                tflops = flops * figures["steps_per_s"] / 1e12 if stage == "pretrain" else float("nan")
                mfu = f"{100 * tflops / peak:5.1f}%" if peak and stage == "pretrain" else "    -"
                ratio = f"{figures['cpu_s_per_step'] / bare:9.2f}" if stage == "pretrain" and device.type == "cpu" else "        -"
                print(f"{name:8} {dtype:5} {str(compile_):7} {stage:9} {row['batch']:5d} {figures['steps_per_s']:8.3f} "
                      f"{figures['samples_per_s']:10.1f} {100 * figures['data_wait_share']:8.1f}% {tflops:8.4f} {mfu:>6} {ratio}")
    overhead = resume_overhead(device)
    print(f"resume overhead (audiomae++ tiny, AdamW): checkpoint {overhead['size_mb']:.1f} MB, "
          f"write {overhead['save_s'] * 1000:.0f} ms (atomic, fsync), restore {overhead['restore_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
