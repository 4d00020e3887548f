"""bench/data.py keeps working: its smallest run reads every clip from the folder and the shards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPS = 24


def test_the_quick_data_benchmark_reads_every_clip_from_every_source(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "data.py"),
        "--quick",
        "--clips",
        str(CLIPS),
        "--workers",
        "0",
        "--train-steps",
        "3",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["shards"]["num_items"] == CLIPS
    rows = {(r["source"], r["cache"], r["page_cache"]): r for r in results["rows"]}
    assert (
        len(rows) == 6 == len(results["rows"])
    )  # 3 sources x cold/warm, one worker count
    for row in rows.values():
        assert row["clips"] == CLIPS and row["workers"] == 0
        assert row["samples_per_s"] > 0 and row["file_bytes_per_sample"] > 0
        assert row["rchar_per_sample"] > 0  # the main process read them
    # 16-bit at 16 kHz in the shards vs 16-bit at 22.05 kHz in the WAVs vs float32 in the cache
    per_sample = {key[:2]: row["file_bytes_per_sample"] for key, row in rows.items()}
    assert (
        per_sample[("shards", "member index cached")]
        < per_sample[("folder", "decoded cache off")]
        < per_sample[("folder", "decoded cache on")]
    )
    assert {r["workers"] for r in results["ratios"]} == {0} and all(
        r["shards_over_folder"] > 0 for r in results["ratios"]
    )
    for wait in results["data_wait"].values():
        assert wait["steps"] >= 1 and 0.0 <= wait["data_wait_share"] <= 1.0
    assert [type(g["met"]) for g in results["goals"]] == [bool, bool, bool]
    assert "met" in done.stdout and "shards / folder samples/s" in done.stdout
