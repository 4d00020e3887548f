"""Forward+backward throughput and peak memory of the catalog's models.

    python bench/models.py                      # CPU, 2 threads, tiny+base of both models
    python bench/models.py --device cuda        # GPU: fp32 and bf16 autocast, torch.compile off/on
    python bench/models.py --only audiomae++/tiny --steps 5

Each configuration runs in its own subprocess, so the CPU peak (ru_maxrss) belongs to it alone.
Printed per row: seconds per fwd+bwd step (median and best wall clock, and median CPU seconds
of all threads), samples/s, model FLOPs per step (torch.utils.flop_counter), achieved TFLOP/s,
MFU (GPU, against --peak-tflops or the card's known bf16 dense peak) and peak memory (GPU:
max_memory_allocated; CPU: peak RSS of the process), taken after our variants ran once and
before the official model is built, so it is our model's alone.

Every configuration times these variants in one process, alternating step by step so all
see the same load (this machine is shared: absolute figures drift, their ratios do not):

    ours  fp32   the model as shipped (fused ``scaled_dot_product_attention``)
    offic fp32   the official code's computation (``bench/official_restated.py``: its
                 modules, hand-written attention and unused norm3, our weights exported
                 to its layout); its training loops autocast with ``device_type="cuda"``,
                 so on a CPU this is how the official code trains
    ours  bf16   autocast bf16 (``--dtype bf16``); on CPU ``explicit_attention``
    fused bf16   (CPU) the same with PyTorch's fused CPU kernel forced: what the dispatch buys
    offic bf16   the official computation under bf16 autocast (on CPU its loops never do this)

On a GPU: ours/offic in fp32, in bf16, and ours compiled (``torch.compile``) against the
official code in eager bf16, one process each.

``vs_here`` divides the official code's median in the same process (on CPU its float32 path,
the only one its loops run; on GPU the same dtype) by the row's median: the side-by-side
speed-up. ``vs_facts`` divides the official code's time in FACTS.md (AudioMAE++ tiny 0.90 s
at batch 8; AudioMAE ViT-B with a 16-layer decoder 1.03 s at batch 2, 2 CPU threads, taken
on a faster or quieter machine than this one may be) by the row's best step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name -> (registry name, constructor kwargs, batch size, official seconds per step on 2 CPU threads)
CONFIGS: dict[str, tuple[str, dict, int, float | None]] = {
    "audiomae++/tiny": ("audiomae++", {"preset": "tiny"}, 8, 0.90),
    "audiomae++/base": ("audiomae++", {"preset": "base"}, 8, None),
    "baseline/tiny": ("baseline", {"preset": "tiny", "img_size": (512, 128)}, 2, None),
    "baseline/base": ("baseline", {"preset": "base", "img_size": (512, 128)}, 2, None),
    # the official timing used a 16-layer global decoder
    "baseline/base-official-size": ("baseline", {"preset": "base", "img_size": (512, 128), "decoder_depth": 16}, 2, 1.03),
}
# bf16 dense peak TFLOP/s by device-name fragment
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "T4": 65.0, "V100": 125.0}


def count_flops(model, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss, _, _ = model(x)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


# (variant, dtype) pairs timed side by side in one CPU process; see the module docstring
CPU_VARIANTS = [
    ("ours", "fp32"),
    ("offic", "fp32"),
    ("ours", "bf16"),
    ("fused", "bf16"),
    ("offic", "bf16"),
]


def run_one(
    name: str, device: str, threads: int, steps: int, warmup: int, pairs: list[tuple[str, str]], compile_model: bool,
    batch: int | None = None, overrides: dict | None = None, compile_backend: str = "inductor",
) -> list[dict]:
    """Time one configuration under each (variant, dtype) pair, alternating step by step.

    Alternating inside one process gives every pair the same machine load (this box is
    shared), so their ratios are meaningful even when absolute figures drift. ``best``
    (fastest step) is the least load-sensitive figure. ``batch`` and ``overrides`` (constructor
    keyword arguments) replace the configuration's (``bench/gpu.py``: batch 64 on a GPU, tiny
    sizes in its CPU dry run); ``compile_backend`` is torch.compile's backend.
    """
    import torch

    import components.models  # noqa: F401  (registers the models)
    from bench.official_restated import restate
    from components.models import layers
    from components.registry import model_registry

    explicit = layers.explicit_attention

    def fused_forced(q, k, v, dropout_p=0.0):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    registry_name, kwargs, default_batch, _ = CONFIGS[name]
    batch = batch or default_batch
    model = model_registry.create(registry_name, **{**kwargs, **(overrides or {})}).to(device).train()
    x = torch.randn(batch, model.in_chans, *model.img_size, device=device)
    flops = count_flops(model, x)  # eager count; compiling does not change the math
    step_model = torch.compile(model, backend=compile_backend) if compile_model else model
    device_type = device.split(":")[0]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    cpu_times: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    official = None

    def step(pair: tuple[str, str]) -> tuple[float, float]:
        variant, dtype = pair
        layers.explicit_attention = fused_forced if variant == "fused" else explicit
        target = official if variant == "offic" else step_model
        autocast = torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=dtype == "bf16")
        start, cpu_start = time.perf_counter(), time.process_time()
        with autocast:
            loss, _, _ = target(x)
        loss.backward()
        target.zero_grad(set_to_none=True)  # fwd+bwd only, as the official figures were taken
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, time.process_time() - cpu_start

    try:
        # Our variants once on their own first, so the peak memory is our model's alone
        # (GPU: max_memory_allocated; CPU: the process' peak RSS, KiB on Linux).
        for pair in pairs:
            if pair[0] != "offic":
                step(pair)
        if device.startswith("cuda"):
            peak_mem = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if any(variant == "offic" for variant, _ in pairs):
            official = restate(model)
        for index in range(warmup + steps):
            for pair in pairs:
                seconds, cpu_seconds = step(pair)
                if index >= warmup:
                    times[pair].append(seconds)
                    cpu_times[pair].append(cpu_seconds)
    finally:
        layers.explicit_attention = explicit
    results = []
    for pair in pairs:
        variant, dtype = pair
        seconds = statistics.median(times[pair])
        # the official code on a CPU trains in float32 whatever the flag (its autocast is CUDA-only)
        reference = ("offic", dtype if device_type == "cuda" else "fp32")
        official_seconds = statistics.median(times[reference]) if reference in times else None
        results.append(
            {
                "name": name,
                "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
                "dtype": dtype,
                "compile": compile_model and variant != "offic",
                "attention": variant,
                "batch": batch,
                "params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
                "seconds": seconds,
                "best_seconds": min(times[pair]),
                "cpu_seconds": statistics.median(cpu_times[pair]),
                "samples_per_s": batch / seconds,
                "flops": flops,
                "peak_mem_mb": peak_mem if variant != "offic" else None,
                "rss_before_mb": rss_before / 1024,
                "vs_here": official_seconds / seconds if official_seconds and variant != "offic" else None,
            }
        )
    return results


def format_row(r: dict, peak_tflops: float | None) -> str:
    official = CONFIGS[r["name"]][3]
    tflops = r["flops"] / r["seconds"] / 1e12 if r.get("flops") else None
    mfu = f"{100 * tflops / peak_tflops:5.1f}%" if tflops and peak_tflops else "    -"
    # against the FACTS figure, from our fastest step (the official one was a quiet-machine time)
    ours = r["attention"] == "ours"
    facts = f"{official / r['best_seconds']:.2f}x" if official and r["device"] == "cpu" and ours else "-"
    here = f"{r['vs_here']:.2f}x" if r.get("vs_here") and r["attention"] != "offic" else "-"
    flops = f"{r['flops'] / 1e9:9.1f}" if r.get("flops") else "        -"
    peak = f"{r['peak_mem_mb']:.0f}" if r.get("peak_mem_mb") is not None else "-"
    tf = f"{tflops:8.3f}" if tflops else "       -"
    return (
        f"{r['name']:<30} {r['attention']:>6} {r['dtype']:>4} {'on' if r['compile'] else 'off':>3} {r['batch']:>3} {r['params_m']:8.1f} "
        f"{r['seconds']:8.3f} {r['best_seconds']:7.3f} {r['cpu_seconds']:7.2f} {r['samples_per_s']:9.2f} {flops} {tf} {mfu} {peak:>9} "
        f"{here:>8} {facts:>8}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS), help="run only these configurations")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU (default: by GPU name)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-ab", action="store_true", help="CPU: time only the shipped model (fp32 and bf16), no attention variants")
    args = parser.parse_args()

    if args.one:  # child process: one configuration, JSON on stdout
        pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
        print(json.dumps(run_one(args.one, args.device, args.threads, args.steps, args.warmup, pairs, args.compile)))
        return 0

    peak = args.peak_tflops
    if args.device.startswith("cuda"):
        # one process per (dtype, compile): a compiled graph is per process
        runs = [(["ours:fp32", "offic:fp32"], False), (["ours:bf16", "offic:bf16"], False), (["ours:bf16", "offic:bf16"], True)]
        if peak is None:
            import torch

            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    else:
        pairs = [("ours", "fp32"), ("ours", "bf16")] if args.no_ab else CPU_VARIANTS
        runs = [([f"{v}:{d}" for v, d in pairs], False)]
    print(f"device={args.device} threads={args.threads} steps={args.steps} warmup={args.warmup} peak_tflops={peak}")
    print(
        f"{'model':<30} {'attn':>6} {'dt':>4} {'cmp':>3} {'B':>3} {'params_M':>8} {'s/step':>8} {'best_s':>7} {'cpu_s':>7} {'samples/s':>9} "
        f"{'GFLOP':>9} {'TFLOP/s':>8} {'MFU':>6} {'peak_MiB':>9} {'vs_here':>8} {'vs_facts':>8}"
    )
    failed = 0
    for name in args.only or list(CONFIGS):
        for pairs, compile_model in runs:
            command = [sys.executable, __file__, "--one", name, "--device", args.device, "--threads", str(args.threads)]
            command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--pairs", ",".join(pairs)]
            command += ["--compile"] if compile_model else []
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                failed += 1
                print(f"{name:<30} {','.join(pairs)} {'on' if compile_model else 'off':>3} FAILED: {done.stderr.strip().splitlines()[-1:]}")
                continue
            for row in json.loads(done.stdout.strip().splitlines()[-1]):
                print(format_row(row, peak), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
