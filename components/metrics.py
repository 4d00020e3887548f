"""What a user sees while a script trains: a progress line, a JSONL file, TensorBoard, a summary.

Only the main rank writes (``enabled``). The JSONL file is the source of truth (one object
per line: ``{"section", "step", "time", ...scalars}``); a resumed run appends to it, so a
reader keeps the last line per ``(section, step)``. TensorBoard is used when installed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from components.run_checkpoint import atomic_write


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def format_progress_line(
    section: str,
    step: int,
    total_steps: int,
    values: dict[str, float],
    samples_per_s: float,
    eta_s: float,
    gpu_memory_gb: float | None = None,
) -> str:
    """``[pretrain] step 120/2000  loss 0.4123  lr 1.20e-04  312.5 samples/s  ETA 0:05:10  mem 3.1 GB``."""
    parts = [f"[{section}] step {step}/{total_steps}"]
    for key, value in values.items():
        parts.append(f"{key} {value:.2e}" if key == "lr" else f"{key} {value:.4f}")
    parts.append(f"{samples_per_s:.1f} samples/s")
    parts.append(f"ETA {format_duration(eta_s)}")
    if gpu_memory_gb is not None:
        parts.append(f"mem {gpu_memory_gb:.1f} GB")
    return "  ".join(parts)


def gpu_memory_gb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def read_metrics(path: Path, section: str | None = None) -> list[dict[str, Any]]:
    """Lines of a metrics file, the last record per ``(section, step)`` (resumed runs repeat steps)."""
    path = Path(path)
    if not path.is_file():
        return []
    latest: dict[tuple[str, int, str], dict[str, Any]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if section is not None and record.get("section") != section:
                continue
            latest[
                (
                    record.get("section", ""),
                    int(record.get("step", 0)),
                    record.get("kind", "train"),
                )
            ] = record
    return sorted(
        latest.values(),
        key=lambda r: (r.get("section", ""), r.get("kind", "train"), r.get("step", 0)),
    )


def write_json_atomic(data: Any, path: Path) -> None:
    """``data`` as indented JSON, written atomically (see ``atomic_write``)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


class MetricsLogger:
    """Progress lines on ``stream``, scalars to ``metrics.jsonl`` (and TensorBoard), summaries as JSON."""

    def __init__(
        self,
        out_dir: Path,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        stream: TextIO | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.jsonl_path = self.out_dir / "metrics.jsonl"
        self.tensorboard_dir = self.out_dir / "tensorboard"
        self._tensorboard_wanted = tensorboard
        self._writer: Any = None
        self._writer_checked = False
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def info(self, message: str) -> None:
        if self.enabled:
            print(message, file=self.stream, flush=True)

    def progress(self, line: str) -> None:
        self.info(line)

    def log(
        self, section: str, step: int, values: dict[str, float], kind: str = "train"
    ) -> None:
        """Append one JSONL record (and TensorBoard scalars ``<section>/<kind>/<name>``)."""
        if not self.enabled:
            return
        record = {
            "section": section,
            "kind": kind,
            "step": int(step),
            "time": round(time.time(), 3),
        }
        record.update({key: float(value) for key, value in values.items()})
        with open(self.jsonl_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        writer = self._tensorboard()
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(f"{section}/{kind}/{key}", float(value), int(step))

    def write_summary(
        self, summary: dict[str, Any], name: str = "summary.json"
    ) -> Path | None:
        if not self.enabled:
            return None
        path = self.out_dir / name
        write_json_atomic(summary, path)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _tensorboard(self) -> Any:
        if self._writer_checked:
            return self._writer
        self._writer_checked = True
        if not self._tensorboard_wanted:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the tensorboard package is optional
            return None
        self._writer = SummaryWriter(log_dir=str(self.tensorboard_dir))
        return self._writer


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """``[K, K]`` int64 counts, row = true class, column = predicted class."""
    index = labels.long().reshape(-1) * num_classes + predictions.long().reshape(-1)
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
