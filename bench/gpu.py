"""The one-shot GPU check: everything that has never run on a GPU, in one run of <= 8 minutes.

    .venv/bin/python bench/gpu.py                  # on one H100/H200 (make bench-gpu)
    .venv/bin/python bench/gpu.py --cpu-dry-run    # the same code paths on CPU, tiny sizes (make bench-gpu-dry)
    .venv/bin/python bench/gpu.py --parts models,frontend --budget 240

Parts, each in its own process with its own time budget (one failing is recorded with its
error and the rest still run; a part that would overrun the global budget is skipped and
says so; a part stopped at its budget keeps the rows it finished):

    models    ours vs the restated official computation (bench/models.py, bench/official_restated.py),
              AudioMAE++ and AudioMAE base presets at batch 64: fp32 and bf16 autocast eager, bf16
              torch.compile'd; samples/s, TFLOP/s (torch.utils.flop_counter), MFU against the
              device's bf16 dense peak
    train     each shipped spec (specs/*.yaml) built with sigmae-gen into a temporary folder, its
              emitted script's first recipe step run in-process at the spec's full model size on
              synthetic data (the script's own run_pipeline; only the data set is swapped for its
              smoke data set at the spec's clip length) with --dtype bf16 --compile true --steps N:
              steps/s, data-wait share (from the metrics.jsonl the engine writes), peak memory
    frontend  Kaldi fbank (bench/frontend.py): batched on the GPU vs batched and per clip on CPU
    tests     the CPU/GPU agreement checks: pytest -k cpu_and_gpu_agree over the catalog's
              transform contracts and the freshly built scripts' emitted test suites

It writes one JSON file (--out, default bench/results/gpu-<UTC timestamp>.json) and prints a
markdown table with the goals met / not met. ``--cpu-dry-run`` runs every part on CPU at tiny
sizes (torch.compile with the "eager" backend: dynamo's graph capture without inductor's C++
build, which alone takes minutes on a CPU; the spec runs uncompiled; the agreement tests
skip without CUDA) so CI keeps this script working; without it a machine with no CUDA device
exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTS = ("models", "train", "frontend", "tests")
# Seconds per part on a GPU (sum 470 of the 480 s global budget) and in the CPU dry run; a part
# starts only with at least its minimum left, and gets min(its budget, what is left).
BUDGET_S = {
    "gpu": {"models": 200, "train": 190, "frontend": 30, "tests": 50},
    "dry": {"models": 60, "train": 90, "frontend": 30, "tests": 60},
}
MIN_PART_S = {
    "gpu": {"models": 60, "train": 45, "frontend": 10, "tests": 15},
    "dry": {"models": 5, "train": 5, "frontend": 3, "tests": 3},
}
# bf16 dense tensor-core peak, TFLOP/s, by device-name fragment (first match wins)
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
    ("L4", 121.0),
)
SPEEDUP_GOAL = (
    1.3  # AudioMAE++ base bf16 pre-training step vs the restated official code
)
MFU_GOAL = 0.40
DATA_WAIT_GOAL = 0.05


def peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a card by its CUDA name, or None (MFU omitted) for any other card.

    Fragments match whole words: "L4" is not the L40S, "H200" not the GH200.
    """
    for fragment, peak in PEAK_TFLOPS:
        if re.search(
            rf"(?<![A-Za-z0-9]){re.escape(fragment)}(?![A-Za-z0-9])", device_name
        ):
            return peak
    return None


# --------------------------------------------------------------------------- part: models
@dataclasses.dataclass(frozen=True)
class Sizes:
    """What differs between a GPU run and the CPU dry run; the code paths do not."""

    dry: bool
    device: str
    model_batch: int
    model_steps: int
    model_warmup: int
    train_steps: int
    train_warmup: int
    fbank_clips: int

    @staticmethod
    def of(dry: bool) -> "Sizes":
        if dry:
            return Sizes(
                True,
                "cpu",
                model_batch=2,
                model_steps=1,
                model_warmup=1,
                train_steps=3,
                train_warmup=1,
                fbank_clips=2,
            )
        return Sizes(
            False,
            "cuda",
            model_batch=64,
            model_steps=10,
            model_warmup=3,
            train_steps=30,
            train_warmup=8,
            fbank_clips=64,
        )


# (bench/models.py configuration, constructor overrides of the dry run)
TINY = {
    "embed_dim": 64,
    "num_heads": 2,
    "depth": 2,
    "decoder_embed_dim": 64,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
MODEL_CONFIGS = (
    (
        "audiomae++/base",
        {"preset": "tiny", "img_size": (48, 80), "patch_size": (4, 16), **TINY},
    ),
    ("baseline/base", {"preset": "tiny", "img_size": (48, 128), **TINY}),
)
TRAIN_ORDER = (
    "folder_audio",
    "esc50_audiomae",
    "radioml_audiomae",
    "esc50_baseline",
    "esc50_finetune_official",
)
MODEL_RUNS = (
    ("fp32", False),
    ("bf16", False),
    ("bf16", True),
)  # (dtype, torch.compile)


def part_models(
    sizes: Sizes, emit: Callable[[dict], None], deadline: float, context: dict
) -> None:
    import torch

    from bench.models import run_one

    peak = peak_tflops(torch.cuda.get_device_name()) if sizes.device == "cuda" else None
    # one thread in the dry run: on a shared 2-core machine two threads spin against other jobs (10x slower)
    threads = 1 if sizes.dry else max(1, min(16, os.cpu_count() or 1))
    # every eager run first: a compiled run is the slow one to start, so it is the one to skip
    for dtype, compiled in MODEL_RUNS:
        for name, dry_overrides in MODEL_CONFIGS:
            label = {"config": name, "dtype": dtype, "compile": compiled}
            # a compiled base model takes ~1-2 minutes to compile; an eager run ~20 s
            needed = (
                (90 if compiled else 20) if not sizes.dry else (5 if compiled else 2)
            )
            if time.time() + needed > deadline:
                emit(
                    {
                        **label,
                        "skipped": f"would overrun the part's budget ({deadline - time.time():.0f} s left, needs ~{needed} s)",
                    }
                )
                continue
            try:
                rows = run_one(
                    name,
                    sizes.device,
                    threads,
                    sizes.model_steps,
                    sizes.model_warmup,
                    [("ours", dtype), ("offic", dtype)],
                    compiled,
                    batch=sizes.model_batch,
                    overrides=dry_overrides if sizes.dry else None,
                    # the dry run traces with dynamo but skips inductor's C++ build (minutes on a CPU)
                    compile_backend="eager" if sizes.dry else "inductor",
                )
            except (
                Exception
            ) as error:  # recorded, and the next configuration still runs
                emit(
                    {
                        **label,
                        "error": f"{type(error).__name__}: {error}",
                        "traceback": traceback.format_exc()[-2000:],
                    }
                )
                if sizes.device == "cuda":
                    torch.cuda.empty_cache()
                continue
            official = next(
                row["seconds"] for row in rows if row["attention"] == "offic"
            )
            for row in rows:
                tflops = row["flops"] / row["seconds"] / 1e12
                # the restated official code in the same process and dtype (always eager) over this row
                vs_official = (
                    official / row["seconds"] if row["attention"] != "offic" else None
                )
                emit(
                    {
                        **label,
                        **row,
                        "compile_backend": (
                            ("eager" if sizes.dry else "inductor") if compiled else None
                        ),
                        "variant": row["attention"],
                        "tflops": tflops,
                        "vs_official": vs_official,
                        # the peaks are bf16 tensor-core figures: no MFU for fp32 rows
                        "mfu": tflops / peak if peak and dtype == "bf16" else None,
                        "peak_tflops": peak,
                    }
                )
            gc.collect()


# --------------------------------------------------------------------------- part: train
def load_script(path: Path) -> Any:
    """Import an emitted script as a module under its own name (its folder on sys.path, so
    DataLoader workers started by spawn can import it too)."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def synthetic_stand_in(base: type, fixed: dict[str, Any], pool: int) -> type:
    """``base`` (the script's smoke data set) with ``fixed`` settings, taking and ignoring the
    real data set's settings (root, clip_seconds, ...) the runtime passes it.

    Its items cycle through ``pool`` signals made once: generating a 10 s float64 test signal
    per item (~5 ms) would make the loader measure the synthetic generator, not the runtime
    (``bench/data.py`` measures real data).
    """

    def __init__(self, folds: list[int] | None = None, **ignored: Any) -> None:
        base.__init__(self, folds=folds, **fixed)
        self.pool = [base.load(self, i) for i in range(min(pool, len(self.records)))]

    def load(self, index: int) -> Any:
        return self.pool[index % len(self.pool)]

    return type(
        f"Bench{base.__name__}",
        (base,),
        {"__init__": __init__, "load": load, "__module__": base.__module__},
    )


def flag_tokens(section: str, name: str, value: Any) -> list[str]:
    flag = f"--{section}.{name}"
    if value is None:
        return [flag, "none"]
    if isinstance(value, bool):
        return [flag, "true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def spec_run_plan(module: Any, sizes: Sizes) -> tuple[Any, list[str], int]:
    """The pipeline (first recipe step, synthetic data) and flags of one spec's training run."""
    # build_pipeline() in current scripts, a PIPELINE constant in earlier ones
    pipeline = (
        module.build_pipeline()
        if hasattr(module, "build_pipeline")
        else module.PIPELINE
    )
    step = pipeline.steps[0]
    section = step.section
    config = module.Config()
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    smoke = {key: dict(value) for key, value in pipeline.smoke.items()}
    data_kwargs = dict(smoke.get("data", {}))
    flags: list[str] = []
    if (
        sizes.dry
    ):  # the spec's smoke sizes as explicit flags, the model narrowed further (TINY)
        for smoke_section, overrides in smoke.items():
            if (
                smoke_section != "data"
                and smoke_section in sections
                and (
                    smoke_section == section or smoke_section in ("model", "transform")
                )
            ):
                for name, value in overrides.items():
                    flags += flag_tokens(smoke_section, name, value)
        model_fields = {f.name for f in dataclasses.fields(sections["model"])}
        for name, value in TINY.items():
            if name in model_fields:
                flags += flag_tokens("model", name, value)
    else:
        # full size: the spec's model and front end; a clip as long as the real data's
        data_cfg = sections.get("data")
        rate = getattr(data_cfg, "sample_rate", None)
        if "sample_rate" in data_kwargs or rate:
            seconds = getattr(data_cfg, "clip_seconds", None) or 5.0
            data_kwargs["num_samples"] = int(
                seconds * (rate or data_kwargs.get("sample_rate", 16000))
            )
        # a fine-tune from a published checkpoint starts from scratch here (no download)
        if "checkpoint" in smoke.get(section, {}):
            flags += flag_tokens(section, "checkpoint", smoke[section]["checkpoint"])
    step_cfg = sections[section]
    batch = (
        int(smoke.get(section, {}).get("batch_size", step_cfg.batch_size))
        if sizes.dry
        else int(step_cfg.batch_size)
    )
    if hasattr(step_cfg, "max_folds"):
        flags += flag_tokens(section, "max_folds", 1)
    if hasattr(step_cfg, "num_workers"):
        flags += flag_tokens(
            section, "num_workers", 0 if sizes.dry else step_cfg.num_workers
        )
    flags += flag_tokens(section, "batch_size", batch)
    flags += flag_tokens(section, "log_every", 1)
    # one epoch holds every step, so no loader (and its workers) restarts mid-measurement,
    # also when a step trains on a part of the folds (train_folds, k-fold's held-out fold)
    data_kwargs["num_items"] = batch * (sizes.train_steps + 2) * 5
    classes = int(data_kwargs.get("num_classes", 4))
    stand_in = synthetic_stand_in(
        pipeline.smoke_data,
        data_kwargs,
        pool=classes * max(2, -(-2 * batch // classes)),
    )
    return dataclasses.replace(pipeline, data=stand_in, steps=(step,)), flags, batch


def metric_figures(path: Path, batch: int, warmup: int) -> dict[str, Any]:
    """Steps/s and the data-wait share from the engine's per-step records, warm-up dropped."""
    records = [
        json.loads(line) for line in path.read_text().splitlines() if line.strip()
    ]
    train = [r for r in records if r.get("kind") == "train" and "samples_per_s" in r]
    kept = train[warmup:] if len(train) > warmup else train
    if not kept:
        raise RuntimeError(f"{path}: no training records")
    step_s = [batch / r["samples_per_s"] for r in kept]
    waits = [
        share * seconds
        for share, seconds in zip((r["data_wait_share"] for r in kept), step_s)
    ]
    return {
        "steps_measured": len(kept),
        "steps_per_s": 1.0 / statistics.median(step_s),
        "samples_per_s": batch / statistics.median(step_s),
        "data_wait_share": sum(waits) / sum(step_s),
        "first_step_s": batch / train[0]["samples_per_s"],  # compilation included
    }


def log_tail(context: dict, chars: int = 1500) -> str:
    try:
        return Path(context["log"]).read_text(errors="replace")[-chars:]
    except (KeyError, OSError):
        return ""


def part_train(
    sizes: Sizes, emit: Callable[[dict], None], deadline: float, context: dict
) -> None:
    import multiprocessing

    import torch

    multiprocessing.set_start_method(
        "fork", force=True
    )  # workers inherit the imported scripts
    if (
        sizes.dry
    ):  # end-of-stage PNG plots and TensorBoard files cost seconds of CPU: off in the dry run
        sys.modules["matplotlib"] = None
        sys.modules["torch.utils.tensorboard"] = None
    scripts = sorted(Path(context["build_dir"]).glob("*/*.py"))
    scripts = [s for s in scripts if s.stem == s.parent.name]
    # distinct models first (what is left when the budget runs out is skipped, and says so)
    scripts.sort(
        key=lambda s: (
            TRAIN_ORDER.index(s.stem) if s.stem in TRAIN_ORDER else len(TRAIN_ORDER),
            s.stem,
        )
    )
    if not scripts:
        raise RuntimeError(f"no built scripts under {context['build_dir']}")
    walls: list[float] = []
    for number, script in enumerate(scripts):
        label = {"spec": script.stem}
        # a spec's run on a GPU is mostly compilation: about as long as the last one took
        needed = 3 if sizes.dry else (1.1 * walls[-1] if walls else 75)
        if time.time() + needed > deadline:
            emit(
                {
                    **label,
                    "skipped": f"would overrun the part's budget ({deadline - time.time():.0f} s left, needs ~{needed:.0f} s)",
                }
            )
            continue
        started = time.perf_counter()
        try:
            module = load_script(script)
            pipeline, flags, batch = spec_run_plan(module, sizes)
            out_dir = Path(tempfile.mkdtemp(prefix=f"bench_gpu_{script.stem}_"))
            argv = [
                "--device",
                sizes.device,
                "--dtype",
                "bf16",
                "--compile",
                "false" if sizes.dry else "true",
                "--steps",
                str(sizes.train_steps),
                "--out-dir",
                str(out_dir),
                *flags,
            ]
            if sizes.device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            code = module.run_pipeline(pipeline, module.Config, argv)
            if sizes.device == "cuda":
                torch.cuda.synchronize()
            peak_mb = (
                torch.cuda.max_memory_allocated() / 2**20
                if sizes.device == "cuda"
                else None
            )
            if code != 0:
                raise RuntimeError(f"run_pipeline exited {code}")
            figures = metric_figures(
                out_dir / "metrics.jsonl", batch, sizes.train_warmup
            )
            summary = json.loads((out_dir / "summary.json").read_text())
            model_cfg = summary.get("config", {}).get("model", {})
            emit(
                {
                    **label,
                    "step": pipeline.steps[0].section,
                    "model": pipeline.model.__name__,
                    "preset": model_cfg.get("preset"),
                    "img_size": model_cfg.get("img_size"),
                    "batch": batch,
                    "dtype": "bf16",
                    "compile": not sizes.dry,
                    "argv": argv,
                    **figures,
                    "peak_mem_mb": peak_mb,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    / 1024,
                    "wall_s": time.perf_counter() - started,
                }
            )
        except Exception as error:  # recorded, and the next spec still runs
            emit(
                {
                    **label,
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc()[-2000:],
                    "wall_s": time.perf_counter() - started,
                    # what the script itself said (run_pipeline reports a user error and returns 2)
                    "log_tail": log_tail(context),
                }
            )
        finally:
            walls.append(time.perf_counter() - started)
            if sizes.device == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
            if not sizes.dry:
                torch._dynamo.reset()  # each spec's model compiles afresh, not against the last one's guards


# --------------------------------------------------------------------------- part: frontend
def part_frontend(
    sizes: Sizes, emit: Callable[[dict], None], deadline: float, context: dict
) -> None:
    import torch

    from bench.frontend import bench_fbank

    devices = [torch.device("cpu")] + (
        [torch.device("cuda")] if sizes.device == "cuda" else []
    )
    rows = {}
    for device in devices:
        for row in bench_fbank(device, sizes.fbank_clips, repeats=3):
            rows[(device.type, row["sample_rate"])] = row
            emit(row)
    for (device_type, rate), row in rows.items():
        cpu = rows.get(("cpu", rate))
        if device_type != "cpu" and cpu:
            best_cpu = max(cpu["batched_clips_per_s"], cpu["per_clip_loop_clips_per_s"])
            emit(
                {
                    "summary": True,
                    "sample_rate": rate,
                    "device": device_type,
                    "gpu_batched_vs_best_cpu": row["batched_clips_per_s"] / best_cpu,
                }
            )


# --------------------------------------------------------------------------- part: tests
def part_tests(
    sizes: Sizes, emit: Callable[[dict], None], deadline: float, context: dict
) -> None:
    junit = Path(tempfile.mkdtemp(prefix="bench_gpu_tests_")) / "junit.xml"
    targets = ["tests/test_contracts_transform.py"]
    # the emitted suites hold the same check; collecting five of them costs ~10 CPU s, so only on a GPU
    if context.get("build_dir") and not sizes.dry:
        targets += [
            str(p) for p in sorted(Path(context["build_dir"]).glob("*/test_*.py"))
        ]
    import pytest

    arguments = [
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(ROOT),
        "-k",
        "cpu_and_gpu_agree",
        f"--junitxml={junit}",
        *(str(ROOT / t) if not Path(t).is_absolute() else t for t in targets),
    ]
    returncode = int(
        pytest.main(arguments)
    )  # in this process: it has torch imported already
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed = []
    if junit.is_file():
        for suite in ElementTree.parse(junit).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            problem = (
                case.find("failure")
                if case.find("failure") is not None
                else case.find("error")
            )
            if problem is not None:
                failed.append(
                    {
                        "test": f"{case.get('classname')}::{case.get('name')}",
                        "message": (problem.get("message") or "")[:500],
                    }
                )
    emit(
        {
            "command": "pytest -k cpu_and_gpu_agree " + " ".join(targets),
            "returncode": returncode,
            **counts,
            "passed": counts["tests"]
            - counts["failures"]
            - counts["errors"]
            - counts["skipped"],
            "failed": failed,
            "cuda": sizes.device == "cuda",
        }
    )
    if returncode not in (0, 1) or (
        returncode == 1 and not failed
    ):  # 1: tests failed (listed); else pytest broke
        raise RuntimeError(
            f"pytest exited {returncode} (collection error, or nothing selected)"
        )


PART_FUNCTIONS = {
    "models": part_models,
    "train": part_train,
    "frontend": part_frontend,
    "tests": part_tests,
}


def run_part_here(
    name: str, dry: bool, records: Path, log: Path, deadline: float, context: dict
) -> None:
    """Child process: run one part, appending each finished row to ``records`` at once."""
    # the part's own output (progress lines, pytest, a traceback) goes to its log
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sizes = Sizes.of(dry)
    if dry:
        import torch

        # two threads on a shared 2-core machine spin against other jobs
        torch.set_num_threads(1)

    def emit(row: dict) -> None:
        with open(records, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, default=str) + "\n")

    try:
        PART_FUNCTIONS[name](sizes, emit, deadline, {**context, "log": str(log)})
    except BaseException:
        traceback.print_exc()  # to the log, which the parent reads back
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()


# --------------------------------------------------------------------------- the parent
class SpecBuild:
    """Every shipped spec built by the generator in the background (the scripts, and on a GPU
    their test suites): it needs no torch, so it overlaps the imports and the first part.
    """

    def __init__(self, build_dir: Path, dry: bool) -> None:
        self.build_dir = build_dir
        self.specs = sorted(str(p) for p in (ROOT / "specs").glob("*.yaml"))
        outputs = "[script]" if dry else "[script, tests]"
        command = [
            sys.executable,
            "-c",
            "import sys; from generator.cli import main; raise SystemExit(main(sys.argv[1:]))",
            "build",
            *self.specs,
            "-o",
            str(build_dir),
            "--set",
            f"outputs={outputs}",
        ]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )
        self.result: dict[str, Any] | None = None

    def finish(self, timeout: float) -> dict[str, Any]:
        if self.result is None:
            try:
                returncode = self.process.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                returncode = None
            self.log.seek(0)
            tail = self.log.read()[-1500:] + (
                "" if returncode is not None else "\nsigmae-gen build timed out"
            )
            self.result = {
                "specs": [Path(s).stem for s in self.specs],
                "returncode": returncode,
                "seconds": time.perf_counter() - self.started,
                "output_tail": tail,
            }
        return self.result


def run_part(
    name: str,
    dry: bool,
    budget: float,
    context: dict,
    log_dir: Path,
    start_method: str | None = None,
) -> dict[str, Any]:
    """Run one part in its own process, stopped at ``budget`` seconds; its finished rows are kept.

    A fresh interpreter (spawn) on a GPU, so no CUDA state crosses parts; a fork in the dry run,
    which inherits the parent's imports (torch alone costs seconds of CPU per process).
    """
    import multiprocessing

    records = log_dir / f"{name}.jsonl"
    log = log_dir / f"{name}.log"
    deadline = (
        time.time() + budget - 3
    )  # the child stops starting rows 3 s before it is killed
    started = time.perf_counter()
    status, error = "ok", None
    sys.stdout.flush()
    sys.stderr.flush()
    process = multiprocessing.get_context(
        start_method or ("fork" if dry else "spawn")
    ).Process(
        target=run_part_here,
        args=(name, dry, records, log, deadline, context),
        name=f"bench-gpu-{name}",
    )
    process.start()
    process.join(budget)
    if process.is_alive():
        process.kill()
        process.join()
        status, error = "timeout", f"stopped at its budget of {budget:.0f} s"
    elif process.exitcode != 0:
        status, error = "failed", f"exited {process.exitcode}"
    rows = (
        [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
        if records.is_file()
        else []
    )
    if status == "ok" and any("error" in row for row in rows):
        status = "partial"
    result = {
        "status": status,
        "seconds": time.perf_counter() - started,
        "budget_s": budget,
        "rows": rows,
    }
    if error:
        tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
        result["error"] = error + (": " + tail if tail else "")
    return result


def goals(parts: dict[str, dict], dry: bool) -> list[dict[str, Any]]:
    """The issue's goals, each met (True), not met (False) or not judged (None, with why).

    The dry run computes the same values at tiny sizes on CPU but judges none: they are GPU goals.
    """
    results = _goal_values(parts)
    if dry:
        for goal in results:
            goal["met"], goal["detail"] = (
                None,
                "CPU dry run (GPU goals are not judged); " + goal["detail"],
            )
    return results


def _goal_values(parts: dict[str, dict]) -> list[dict[str, Any]]:
    model_rows = [r for r in parts.get("models", {}).get("rows", []) if "seconds" in r]
    results = []
    ours = [
        r
        for r in model_rows
        if r["config"] == "audiomae++/base"
        and r["dtype"] == "bf16"
        and r["variant"] == "ours"
        and r.get("vs_official")
    ]
    best = max(ours, key=lambda r: r["vs_official"], default=None)
    results.append(
        {
            "goal": f"AudioMAE++ base bf16 pre-training step >= {SPEEDUP_GOAL}x the restated official code",
            "value": best and best["vs_official"],
            "met": None if best is None else best["vs_official"] >= SPEEDUP_GOAL,
            "detail": (
                "no AudioMAE++ base bf16 rows"
                if best is None
                else f"ours {'compiled' if best['compile'] else 'eager'} vs official eager, batch {best['batch']}"
            ),
        }
    )
    for config in ("audiomae++/base", "baseline/base"):
        rows = [
            r
            for r in model_rows
            if r["config"] == config and r["variant"] == "ours" and r["dtype"] == "bf16"
        ]
        mfus = [r["mfu"] for r in rows if r.get("mfu") is not None and r["batch"] >= 64]
        results.append(
            {
                "goal": f"MFU >= {100 * MFU_GOAL:.0f} % ({config}, bf16, batch >= 64)",
                "value": max(mfus, default=None),
                "met": max(mfus) >= MFU_GOAL if mfus else None,
                "detail": (
                    "no bf16 rows at batch >= 64 with a known device peak"
                    if not mfus
                    else "best of eager and compiled"
                ),
            }
        )
    train_rows = [
        r for r in parts.get("train", {}).get("rows", []) if "data_wait_share" in r
    ]
    worst = max(train_rows, key=lambda r: r["data_wait_share"], default=None)
    results.append(
        {
            "goal": f"data wait <= {100 * DATA_WAIT_GOAL:.0f} % of step time (every spec)",
            "value": worst and worst["data_wait_share"],
            "met": (
                None if worst is None else worst["data_wait_share"] <= DATA_WAIT_GOAL
            ),
            "detail": (
                "no training rows" if worst is None else f"worst: {worst['spec']}"
            ),
        }
    )
    return results


def fmt(value: Any, pattern: str = "{:.3g}") -> str:
    return "-" if value is None else pattern.format(value)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"## bench/gpu.py on {report['device']} ({'CPU dry run, tiny sizes' if report['dry_run'] else 'full sizes'})",
        "",
        "| part | status | seconds |",
        "| --- | --- | ---: |",
    ]
    for name, part in report["parts"].items():
        why = (
            part.get("error")
            or part.get("reason")
            or "; ".join(r.get("error", "")[:80] for r in part["rows"] if "error" in r)
        )
        lines.append(
            f"| {name} | {part['status']}{': ' + why.splitlines()[0] if why else ''} | {part.get('seconds', 0):.1f} |"
        )
    parts = report["parts"]
    model_rows = parts.get("models", {}).get("rows", [])
    if model_rows:
        lines += [
            "",
            "| model | dtype | compile | variant | batch | samples/s | TFLOP/s | MFU | peak MiB | vs official |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in model_rows:
            if "seconds" not in r:
                lines.append(
                    f"| {r['config']} | {r['dtype']} | {r['compile']} | {r.get('skipped') or r.get('error', '')[:80]} | | | | | | |"
                )
                continue
            lines.append(
                f"| {r['config']} | {r['dtype']} | {r['compile']} | {r['variant']} | {r['batch']} | {r['samples_per_s']:.1f} | "
                f"{r['tflops']:.3g} | {fmt(r['mfu'], '{:.1%}')} | {fmt(r['peak_mem_mb'], '{:.0f}')} | {fmt(r.get('vs_official'), '{:.2f}x')} |"
            )
    train_rows = parts.get("train", {}).get("rows", [])
    if train_rows:
        lines += [
            "",
            "| spec | step | model | batch | steps/s | samples/s | data wait | peak MiB | first step s |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in train_rows:
            if "steps_per_s" not in r:
                lines.append(
                    f"| {r['spec']} | {r.get('skipped') or r.get('error', '')[:100]} | | | | | | | |"
                )
                continue
            lines.append(
                f"| {r['spec']} | {r['step']} | {r['model']} {r['preset']} {tuple(r['img_size'] or ())} | {r['batch']} | "
                f"{r['steps_per_s']:.3g} | {r['samples_per_s']:.1f} | {r['data_wait_share']:.1%} | "
                f"{fmt(r['peak_mem_mb'], '{:.0f}')} | {r['first_step_s']:.2f} |"
            )
    front = [
        r
        for r in parts.get("frontend", {}).get("rows", [])
        if "batched_clips_per_s" in r
    ]
    if front:
        lines += [
            "",
            "| fbank | device | kHz | clips | batched clips/s | per-clip loop clips/s |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| kaldi | {r['device']} | {r['sample_rate'] / 1000:g} | {r['clips']} | {r['batched_clips_per_s']:.0f} | {r['per_clip_loop_clips_per_s']:.0f} |"
            for r in front
        ]
        lines += [
            f"GPU batched vs best CPU path at {r['sample_rate'] / 1000:g} kHz: {r['gpu_batched_vs_best_cpu']:.1f}x"
            for r in parts["frontend"]["rows"]
            if r.get("summary")
        ]
    for r in parts.get("tests", {}).get("rows", []):
        lines += [
            "",
            f"agreement tests (`{r['command']}`): {r['passed']} passed, {r['failures'] + r['errors']} failed, {r['skipped']} skipped"
            + ("" if r["cuda"] else " (no CUDA: the checks skip or return at once)"),
        ]
    lines += ["", "| goal | value | met |", "| --- | ---: | --- |"]
    for g in report["goals"]:
        value = fmt(g["value"], "{:.3g}")
        lines.append(
            f"| {g['goal']} | {value} | {'met' if g['met'] else 'not met' if g['met'] is False else 'not judged: ' + g['detail']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run every part on CPU at tiny sizes (seconds)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file (default bench/results/gpu-<UTC timestamp>.json)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=480.0,
        help="global time budget in seconds (default 480)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)}",
    )
    # how the parts' processes start (default: spawn on a GPU, fork in the dry run), to try
    # the GPU's way on a CPU
    parser.add_argument(
        "--start-method",
        choices=("fork", "spawn"),
        default=None,
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args(argv)
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        print(
            f"bench/gpu.py: --parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}",
            file=sys.stderr,
        )
        return 2
    scratch_dir = tempfile.TemporaryDirectory(prefix="bench_gpu_")
    scratch = scratch_dir.name
    # the build needs no torch: it runs while torch is imported and the first part runs
    build = (
        SpecBuild(Path(scratch) / "build", args.cpu_dry_run)
        if {"train", "tests"} & set(wanted)
        else None
    )

    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print(
            "bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}). Run it on a GPU machine with a CUDA build of torch, or pass --cpu-dry-run "
            "to run the same code paths on CPU at tiny sizes.",
            file=sys.stderr,
        )
        if build is not None:
            build.process.kill()
            build.process.wait()
        scratch_dir.cleanup()
        return 2
    mode = "dry" if args.cpu_dry_run else "gpu"
    if args.cpu_dry_run:  # imported once here; the forked parts inherit them
        import pytest  # noqa: F401

        import bench.frontend  # noqa: F401
        import bench.models  # noqa: F401
        import bench.official_restated  # noqa: F401
        import components.models  # noqa: F401
    started = time.time()
    global_deadline = started + args.budget
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or ROOT / "bench" / "results" / f"gpu-{stamp}.json"
    device_name = (
        torch.cuda.get_device_name()
        if mode == "gpu"
        else f"cpu ({platform.processor() or platform.machine()})"
    )
    report: dict[str, Any] = {
        "started_utc": stamp,
        "device": device_name,
        "dry_run": args.cpu_dry_run,
        "budget_s": args.budget,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "peak_tflops_bf16": peak_tflops(device_name) if mode == "gpu" else None,
        "parts": {},
    }
    with scratch_dir:
        context: dict[str, Any] = {}
        for name in PARTS:
            if name not in wanted:
                continue
            if (
                name in ("train", "tests")
                and build is not None
                and "build" not in report
            ):
                report["build"] = build.finish(
                    timeout=min(120.0, global_deadline - time.time())
                )
                if report["build"]["returncode"] == 0:
                    context["build_dir"] = str(build.build_dir)
            left = global_deadline - time.time()
            budget = min(BUDGET_S[mode][name], left)
            if budget < MIN_PART_S[mode][name]:
                report["parts"][name] = {
                    "status": "skipped",
                    "seconds": 0.0,
                    "rows": [],
                    "reason": f"would overrun the global budget ({left:.0f} s left, needs >= {MIN_PART_S[mode][name]} s)",
                }
            elif name == "train" and "build_dir" not in context:
                report["parts"][name] = {
                    "status": "failed",
                    "seconds": 0.0,
                    "rows": [],
                    "error": "sigmae-gen build failed: "
                    + str(report.get("build", {}).get("output_tail", ""))[-500:],
                }
            else:
                report["parts"][name] = run_part(
                    name,
                    args.cpu_dry_run,
                    budget,
                    context,
                    Path(scratch),
                    args.start_method,
                )
            print(
                f"[{time.time() - started:6.1f} s] {name}: {report['parts'][name]['status']}",
                flush=True,
            )
        if build is not None and "build" not in report:
            report["build"] = build.finish(timeout=1.0)
    report["goals"] = goals(report["parts"], args.cpu_dry_run)
    report["seconds"] = time.time() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(markdown(report))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
