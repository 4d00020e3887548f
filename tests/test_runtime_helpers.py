"""Stand-ins shared by the runtime and recipe tests: a tone data set, a tiny pipeline, a Config.

``ToneDataset`` is an easy synthetic classification set (class c is a sine at its own
frequency with random phase and noise), deterministic per index. ``make_pipeline`` wires it to
the catalog's ``LogMel`` transform and a tiny ``AudioMAEPlusPlus``, with ``Config``
dataclasses written the way the generator's template renders them. ``run_main`` runs the
pipeline in a subprocess-friendly way (``python tests/test_runtime_helpers.py ARGS``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from components.data.base import Record, SignalDataset  # noqa: E402
from components.models.audiomae_pp import AudioMAEPlusPlus  # noqa: E402
from components.recipes import embed, finetune, kfold, knn, linear_probe, mae_pretrain  # noqa: E402
from components.loop_support import LoopResult, LoopSettings, plan_loop  # noqa: E402
from components.recipes.finetune import classifier_loop  # noqa: E402
from components.recipes.pretrain import pretrain_loop  # noqa: E402
from components.distributed import DistInfo  # noqa: E402
from components.metrics import MetricsLogger  # noqa: E402
from components.plots import Plotter  # noqa: E402
from components.flags import parse_config  # noqa: E402
from components.runtime import (  # noqa: E402
    Components, Handoff, Pipeline, RunOptions, RunRecord, Stage, Step, StopFlag, run_pipeline,
)
from components.transforms.spectral import LogMel  # noqa: E402


class ToneDataset(SignalDataset):
    """``num_items`` clips; class ``c`` is a tone at ``base_hz * (c + 1)``; folds round-robin."""

    signal_kind = "audio"

    def __init__(
        self,
        num_classes: int = 4,
        num_items: int = 32,
        num_samples: int = 2048,
        sample_rate: int = 8000,
        num_folds: int = 4,
        noise: float = 0.3,
        base_hz: float = 400.0,
        delay_s: float = 0.0,
        folds: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.delay_s = delay_s  # slows loading down so a test can interrupt a run mid-way
        self.num_samples, self.sample_rate, self.noise, self.base_hz = num_samples, sample_rate, noise, base_hz
        self.class_names = [f"tone{c}" for c in range(num_classes)]
        records = [
            Record(key=f"index:{i}", label=i % num_classes, category=f"tone{i % num_classes}", fold=(i // num_classes) % num_folds + 1)
            for i in range(num_items)
        ]
        self.records = [r for r in records if folds is None or r.fold in folds]

    def load(self, index: int) -> torch.Tensor:
        if self.delay_s:
            time.sleep(self.delay_s)
        record = self.records[index]
        generator = torch.Generator().manual_seed(int(record.key.split(":")[1]))
        t = torch.arange(self.num_samples) / self.sample_rate
        phase = float(torch.rand((), generator=generator)) * 2 * math.pi
        tone = torch.sin(2 * math.pi * self.base_hz * (record.label + 1) * t + phase)
        return (tone + self.noise * torch.randn(self.num_samples, generator=generator)).float()


class NeedsRootDataset(ToneDataset):
    """A file-backed stand-in: fails clearly when its root folder is missing."""

    def __init__(
        self, root: str = "data/missing", download: bool = False, sample_rate: int = 8000, num_items: int = 32,
        noise: float = 0.3, folds: list[int] | None = None,
    ) -> None:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"NeedsRootDataset: {root} does not exist")
        super().__init__(sample_rate=sample_rate, num_items=num_items, noise=noise, folds=folds)


@dataclass
class DataConfig:
    root: str = "data/missing"
    download: bool = False
    sample_rate: int = 8000
    num_items: int = 32
    noise: float = 0.3
    folds: list[int] | None = None


@dataclass
class TransformConfig:
    sample_rate: int = 8000
    n_fft: int = 256
    win_length: int = 256
    hop_length: int = 128
    n_mels: int = 16
    f_min: float = 0.0
    f_max: float = 4000.0
    target_frames: int | None = 16


@dataclass
class ModelConfig:
    preset: Literal["tiny", "base", "large"] = "tiny"
    img_size: tuple[int, int] = (16, 16)
    patch_size: tuple[int, int] = (4, 8)
    embed_dim: int | None = 32
    depth: int | None = 1
    num_heads: int | None = 2
    decoder_embed_dim: int | None = 32
    decoder_depth: int | None = 1
    decoder_num_heads: int | None = 2
    mask_ratio: float = 0.5
    norm_pix_loss: bool = False


@dataclass
class PretrainConfig:
    epochs: int = 2
    batch_size: int = 8
    accum_steps: int = 1
    base_lr: float = 1.5e-4
    lr: float | None = 1e-3
    warmup_epochs: float = 0.5
    clip_grad: float | None = 1.0
    infonce_weight: float = 0.0
    uniformity_weight: float = 0.0
    num_workers: int = 0
    checkpoint_every: int = 2
    log_every: int = 1
    plot_every: int = 0


@dataclass
class FinetuneConfig:
    checkpoint: str | None = None
    epochs: int = 2
    batch_size: int = 8
    lr: float | None = 2e-3
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0
    freq_mask: int = 0
    time_mask: int = 0
    mask_t_prob: float = 0.0
    layer_decay: float = 0.75
    drop_path: float = 0.0
    num_workers: int = 0
    checkpoint_every: int = 2
    log_every: int = 1


@dataclass
class EmbedConfig:
    checkpoint: str | None = None
    cache_dir: str | None = None
    pooling: Literal["mean", "cls", "max"] = "mean"
    batch_size: int = 16
    num_workers: int = 0


@dataclass
class KnnConfig:
    k: int = 5
    num_workers: int = 0


@dataclass
class ProbeConfig:
    checkpoint: str | None = None
    eval_folds: list[int] | None = None
    epochs: int = 20
    batch_size: int = 16
    num_workers: int = 0


@dataclass
class KfoldConfig:
    epochs: int = 1
    batch_size: int = 8
    lr: float | None = 2e-3
    max_folds: int | None = 2
    num_workers: int = 0
    log_every: int = 1


@dataclass
class Config:
    run: RunOptions = field(default_factory=RunOptions)
    data: DataConfig = field(default_factory=DataConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    kfold: KfoldConfig = field(default_factory=KfoldConfig)


SMOKE: dict[str, dict[str, Any]] = {"data": {"num_classes": 4, "num_items": 32}, "pretrain": {"batch_size": 4}}

ALL_STEPS = (
    Step("pretrain", mae_pretrain),
    Step("finetune", finetune),
    Step("embed", embed),
    Step("knn", knn),
    Step("probe", linear_probe),
    Step("kfold", kfold),
)


def make_pipeline(steps: tuple[Step, ...] = ALL_STEPS, data: type = NeedsRootDataset, name: str = "tones") -> Pipeline:
    return Pipeline(
        name=name,
        spec_hash="0" * 64,
        data=data,
        transform=LogMel,
        model=AudioMAEPlusPlus,
        steps=steps,
        smoke_data=ToneDataset,
        smoke=SMOKE,
    )


def run_main(argv: list[str], steps: tuple[Step, ...] = ALL_STEPS) -> int:
    torch.set_num_threads(1)
    return run_pipeline(make_pipeline(steps), Config, argv)


class LinearRegressor(nn.Module):
    """A deterministic stand-in model: one linear layer over the first ``in_features`` samples."""

    def __init__(self, in_features: int = 64) -> None:
        super().__init__()
        self.in_features = in_features
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[:, : self.in_features]).squeeze(-1)


class RawSignal(nn.Module):
    """A stand-in transform: the padded waveforms themselves (takes the collate's lengths)."""

    def forward(self, batch: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return batch


class RegressionObjective(nn.Module):
    """MSE of the regressor against the labels; from call ``nan_from`` on, the loss is NaN."""

    def __init__(self, model: nn.Module, nan_from: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.calls += 1
        loss = nn.functional.mse_loss(self.model(features), labels.float())
        if self.nan_from is not None and self.calls >= self.nan_from:
            loss = loss * float("nan")
        return loss, {}


def make_stage(
    out_dir: Path,
    argv: list[str] | tuple[str, ...] = (),
    dist_info: DistInfo | None = None,
    section: str = "toy",
    smoke: bool = True,
) -> Stage:
    """A ``Stage`` as ``run_pipeline`` builds it for step ``section``, for driving a recipe or its loop directly."""
    pipeline = make_pipeline()
    config = parse_config(pipeline, Config, [*(["--smoke"] if smoke else []), "--out-dir", str(out_dir), *argv])
    metrics = MetricsLogger(out_dir, enabled=dist_info is None or dist_info.is_main)
    run = RunRecord(
        name=pipeline.name, spec_hash=pipeline.spec_hash, options=config.run, dist=dist_info or DistInfo(),
        device=torch.device("cpu"), amp_dtype=None, out_dir=Path(out_dir),
    )
    return Stage(
        run=run, section=section, index=0, resume=bool(config.run.resume), components=Components(pipeline, config, run),
        inputs=Handoff(), metrics=metrics, plots=Plotter(out_dir, info=metrics.info), stop=StopFlag(),
    )


@dataclass
class LoopRun:
    """A recipe's own training loop with what it is called with, run by ``run()``.

    ``pretrain_loop`` (the MAE recipe's), or ``classifier_loop`` (fine-tuning's) when
    ``evaluate`` is given. ``plan`` is laid out as the recipes lay it out, without a
    ``--steps`` cap unless ``max_steps`` is given (``--smoke`` would cap it at 2).
    """

    stage: Stage
    model: nn.Module
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    dataset: Any
    settings: LoopSettings
    lr_at: Any
    transform: nn.Module = field(default_factory=lambda: RawSignal())
    evaluate: Any = None
    on_step: Any = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        self.checkpointer = self.stage.checkpointer()
        self.plan = plan_loop(self.stage, self.settings, len(self.dataset), self.max_steps)

    def run(self) -> LoopResult:
        given = dict(
            model=self.model, objective=self.objective, transform=self.transform, optimizer=self.optimizer,
            dataset=self.dataset, settings=self.settings, plan=self.plan, lr_at=self.lr_at,
            checkpointer=self.checkpointer, on_step=self.on_step,
        )
        if self.evaluate is None:
            return pretrain_loop(self.stage, **given)
        return classifier_loop(self.stage, **given, evaluate=self.evaluate, section=self.stage.section)


if __name__ == "__main__":
    # "python tests/test_runtime_helpers.py STEPS ARGS...": STEPS is a comma list of step names.
    wanted = sys.argv[1].split(",")
    SMOKE["data"] = {**SMOKE["data"], "delay_s": float(os.environ.get("TONES_DELAY_S", "0"))}
    chosen = tuple(step for step in ALL_STEPS if step.section in wanted)
    raise SystemExit(run_main(sys.argv[2:], chosen))


def free_port() -> int:
    """A port for a gloo group's rendezvous, free now and unlikely to be taken before it binds.

    The port is closed again before the spawned ranks bind it, seconds later. An ephemeral
    port (``bind(0)``) could meanwhile go to another process, another pytest-xdist worker's
    group among them, whose ranks would then meet ours. So each xdist worker draws from its
    own block below Linux's ephemeral range (32768+), at random, and checks that it binds.
    """
    import random
    import socket

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    low = 10_000 + (index % 8) * 2_500
    draw = random.Random()  # the process's own stream: the tests' seeds do not pick ports
    for _ in range(200):
        port = draw.randrange(low, low + 2_500)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{low + 2_499} for this test worker")


def spawn_and_join(worker, args: tuple, nprocs: int, timeout: float) -> None:
    """``torch.multiprocessing.spawn`` that fails the test instead of hanging on a deadlock."""
    import torch.multiprocessing as mp

    context = mp.spawn(worker, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"the {nprocs} spawned processes did not finish in {timeout:.0f} s (deadlock?)")

