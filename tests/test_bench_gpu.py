"""bench/gpu.py keeps working without a GPU: its CPU dry run runs every part and writes sane figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.py"


@pytest.fixture(scope="module")
def dry_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("bench_gpu") / "report.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done, json.loads(out.read_text())


def test_the_dry_run_runs_every_part(
    dry_run: tuple[subprocess.CompletedProcess, dict],
) -> None:
    _, report = dry_run
    assert report["dry_run"] is True
    # what went wrong, shown when it fails: each part's error, each failed row's error and log
    problems = [part["error"] for part in report["parts"].values() if "error" in part]
    problems += [
        row
        for part in report["parts"].values()
        for row in part["rows"]
        if "error" in row
    ]
    assert {name: part["status"] for name, part in report["parts"].items()} == {
        "models": "ok",
        "train": "ok",
        "frontend": "ok",
        "tests": "ok",
    }, problems


def test_model_rows_compare_ours_with_the_official_computation(
    dry_run: tuple[subprocess.CompletedProcess, dict],
) -> None:
    rows = [r for r in dry_run[1]["parts"]["models"]["rows"] if "seconds" in r]
    measured = {(r["config"], r["dtype"], r["variant"]) for r in rows}
    for config in ("audiomae++/base", "baseline/base"):
        for dtype in ("fp32", "bf16"):
            assert {(config, dtype, "ours"), (config, dtype, "offic")} <= measured
    for row in rows:
        assert row["samples_per_s"] > 0 and row["flops"] > 0 and row["tflops"] > 0
        assert row["seconds"] >= row["best_seconds"] > 0
        assert row["mfu"] is None  # no known peak for a CPU
        if row["variant"] == "ours":
            assert row["vs_official"] > 0
    # compiled too (dynamo's graph capture, without inductor's C++ build on a CPU)
    compiled = {r["config"]: r for r in rows if r["compile"] and r["variant"] == "ours"}
    assert sorted(compiled) == ["audiomae++/base", "baseline/base"]
    assert all(
        r["compile_backend"] == "eager" and r["dtype"] == "bf16"
        for r in compiled.values()
    )
    assert not [
        r for r in dry_run[1]["parts"]["models"]["rows"] if "seconds" not in r
    ]  # none skipped or failed


def test_every_shipped_spec_trains_with_sane_figures(
    dry_run: tuple[subprocess.CompletedProcess, dict],
) -> None:
    rows = dry_run[1]["parts"]["train"]["rows"]
    assert sorted(r["spec"] for r in rows) == sorted(
        p.stem for p in (ROOT / "specs").glob("*.yaml")
    )
    for row in rows:
        assert "error" not in row, row
        assert row["steps_per_s"] > 0 and row["samples_per_s"] > 0
        assert row["samples_per_s"] == pytest.approx(row["steps_per_s"] * row["batch"])
        assert 0.0 <= row["data_wait_share"] <= 1.0
        assert row["steps_measured"] >= 1


def test_frontend_and_agreement_tests_ran(
    dry_run: tuple[subprocess.CompletedProcess, dict],
) -> None:
    parts = dry_run[1]["parts"]
    fbank = parts["frontend"]["rows"]
    assert {r["sample_rate"] for r in fbank} == {16000, 44100}
    assert all(
        r["batched_clips_per_s"] > 0 and r["per_clip_loop_clips_per_s"] > 0
        for r in fbank
    )
    (tests,) = parts["tests"]["rows"]
    assert (
        tests["tests"] >= 1 and tests["failures"] == tests["errors"] == 0
    )  # the checks were selected


def test_goals_are_computed_but_not_judged_on_cpu(
    dry_run: tuple[subprocess.CompletedProcess, dict],
) -> None:
    done, report = dry_run
    goals = {g["goal"]: g for g in report["goals"]}
    assert len(goals) == 4 and all(g["met"] is None for g in goals.values())
    speedup = next(
        g for name, g in goals.items() if name.startswith("AudioMAE++ base bf16")
    )
    assert speedup["value"] > 0
    wait = next(g for name, g in goals.items() if name.startswith("data wait"))
    assert 0.0 <= wait["value"] <= 1.0
    assert "| goal | value | met |" in done.stdout and "not judged" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_and_without_dry_run_it_exits_2_with_one_message(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        "no CUDA device" in done.stderr
        and "--cpu-dry-run" in done.stderr
        and "Traceback" not in done.stderr
    )
    assert not (tmp_path / "x.json").exists()


# --------------------------------------------------------------------------- part isolation
def load_bench_gpu():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def slow_part(sizes, emit, deadline, context) -> None:
    emit({"row": 1})
    import time

    time.sleep(60)


def failing_part(sizes, emit, deadline, context) -> None:
    emit({"row": 1})
    raise RuntimeError("this part broke")


def part_with_a_failed_row(sizes, emit, deadline, context) -> None:
    emit({"row": 1, "error": "RuntimeError: one configuration broke"})
    emit({"row": 2})


@pytest.mark.parametrize(
    "part,status,fragment",
    [
        (slow_part, "timeout", "stopped at its budget of 3 s"),
        (failing_part, "failed", "RuntimeError: this part broke"),
        (part_with_a_failed_row, "partial", None),
    ],
)
def test_a_part_that_overruns_or_fails_keeps_its_finished_rows(
    part,
    status: str,
    fragment: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = load_bench_gpu()
    monkeypatch.setitem(gpu.PART_FUNCTIONS, "frontend", part)
    started = __import__("time").perf_counter()
    result = gpu.run_part("frontend", True, 3.0, {}, tmp_path, "fork")
    assert __import__("time").perf_counter() - started < 20
    assert result["status"] == status
    assert result["rows"][0]["row"] == 1
    if fragment:
        assert fragment in result["error"]
    else:
        assert "error" not in result and [r["row"] for r in result["rows"]] == [1, 2]


def test_parts_that_would_overrun_the_global_budget_are_skipped_and_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gpu = load_bench_gpu()
    out = tmp_path / "report.json"
    assert (
        gpu.main(
            [
                "--cpu-dry-run",
                "--parts",
                "frontend,models",
                "--budget",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert [(name, part["status"]) for name, part in report["parts"].items()] == [
        ("models", "skipped"),
        ("frontend", "skipped"),
    ]
    assert all(
        "would overrun the global budget" in part["reason"]
        for part in report["parts"].values()
    )
    assert "skipped: would overrun" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", None),
        ("NVIDIA GH200 480GB", None),
        ("Tesla T4", None),
    ],
)
def test_mfu_uses_the_cards_bf16_peak_or_none(name: str, peak: float | None) -> None:
    assert load_bench_gpu().peak_tflops(name) == peak
