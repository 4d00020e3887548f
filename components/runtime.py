"""The runtime every emitted script hands over to: flags, device, DDP, data, checkpoints, steps.

The template declares a ``Config`` dataclass (one section per component and recipe step) and
a ``Pipeline`` naming the spec's classes and recipe functions, then calls ``run_pipeline``.
Everything that runs at training time lives here and in the recipes, so it is tested in the
catalog before it is ever emitted.

``run_pipeline`` runs the steps in order. Each recipe gets a frozen ``Stage``: the run record
(``RunRecord``: device, dtype, ranks, output folder, run flags), its section, the spec's
``Components``, the ``Handoff`` of the steps before it, and the run's metrics, plots and stop
flag. It returns a ``StepResult``: its summary and what it hands on (e.g. the encoder
checkpoint), which ``pipeline_state.json`` keeps for ``--resume``.

Exit codes: 0 done (or stopped by SIGTERM/SIGINT after a checkpoint), 1 the run failed (a
non-finite loss), 2 a user error (bad flag, missing data, wrong checkpoint) with one message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from components.run_checkpoint import RESUME_KEYS, CheckpointError, Checkpointer
from components.data.base import folds_of, indices_in_folds
from components.distributed import (
    DistInfo,
    DistributedSetupError,
    barrier,
    dist_info_from_env,
    init_distributed,
    shutdown_distributed,
)
from components.errors import UsageError
from components.flags import parse_config
from components.metrics import MetricsLogger, write_json_atomic
from components.plots import Plotter


# --------------------------------------------------------------------------- records
@dataclass
class RunOptions:
    """Flags without a section: ``--smoke --data-dir --download --out-dir --resume`` etc.

    Args:
        smoke: Tiny run on the spec's synthetic smoke data with its smoke overrides (and
            --steps 2 unless given): checks the whole pipeline in seconds on a CPU.
        data_dir: Where the data set lives: replaces the data section's root (a folder
            or file, as the data set expects).
        download: Fetch the data set into its root first when it is missing (data sets
            with a public download only).
        out_dir: Folder for checkpoints, metrics and plots; default runs/<spec name>
            (runs/<spec name>-smoke with --smoke).
        resume: Continue the run in --out-dir from its last checkpoints; finished steps
            with unchanged settings are skipped.
        device: auto (this rank's GPU, else mps, else cpu), cpu, cuda, cuda:N or mps.
        dtype: Autocast precision: auto (bf16 on GPUs and CPUs with native bf16, else
            fp32), bf16, fp16 or fp32.
        compile: Compile the model with torch.compile (faster steps on GPUs after a slow
            first one).
        seed: Seed of every random draw (model initialisation, masking, data order);
            each rank and step derives its own from it.
        deterministic: Use deterministic kernels and no TF32 matmuls, for
            bit-reproducible runs (slower).
        steps: Cap the optimizer steps of each training step (pre-training, fine-tuning)
            for a short run; evaluation steps always run whole.
        fit_schedule: With --steps: lay the warm-up and cosine schedule over the capped
            steps instead of the full schedule.
    """

    smoke: bool = False
    data_dir: str | None = None
    download: bool = False
    out_dir: str | None = None
    resume: bool = False
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    steps: int | None = None
    fit_schedule: bool = False


@dataclass(frozen=True)
class Step:
    """A step of the pipeline: its ``Config`` section and its recipe, ``run(stage, **settings)``."""

    section: str
    run: Callable[..., StepResult]


@dataclass(frozen=True)
class Pipeline:
    name: str
    spec_hash: str
    data: type
    transform: type
    model: type
    steps: tuple[Step, ...]
    smoke_data: type | None = None
    smoke: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept: exit 1."""


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint was written: exit 0, resume with --resume."""


class StopFlag:
    """Set by SIGTERM/SIGINT; training loops check it after every optimizer step.

    Under DDP the ranks must stop at the same step, which they agree on only when they sync:
    the training loops sync at least every few seconds (``STOP_CHECK_SECONDS``) for that.

    The first signal asks for a clean stop (checkpoint, exit 0: Colab disconnects, spot
    preemption); a second SIGINT interrupts at once, for a user who really means it.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, name: str = "request") -> None:
        self.signal_name = name

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(
            f"{self.signal_name}: stopping after the current step with a checkpoint"
            + (" (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""),
            file=sys.stderr,
            flush=True,
        )

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. not in a notebook worker)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def worker_leaves_signals_to_main(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: SIGTERM and SIGINT are the main process's to handle.

    SLURM, systemd, Kubernetes, ``timeout`` and Ctrl-C signal the whole process group. A
    worker killed by that signal makes the main process fail ("DataLoader worker ... killed
    by signal") before it can write its checkpoint; so a worker ignores SIGINT and its
    first SIGTERM, and the main process stops after the current step, checkpoints and shuts
    its workers down as usual. A second SIGTERM (a scheduler insisting, or the loader's own
    ``terminate()`` of a worker stuck at shutdown) ends the worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_first_sigterm)


def _worker_first_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the next one ends this worker


# --------------------------------------------------------------------------- device
def resolve_device(request: str, dist_info: DistInfo) -> torch.device:
    """``auto`` picks cuda (this rank's GPU), then mps, then cpu; explicit requests are checked."""
    request = request.strip().lower()
    if request == "auto":
        if torch.cuda.is_available():
            request = "cuda"
        elif torch.backends.mps.is_available():
            request = "mps"
        else:
            request = "cpu"
    try:
        device = torch.device(request)
    except RuntimeError:
        raise UsageError(
            f"--device {request!r} is not a device; use auto, cuda, cuda:N, mps or cpu"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                "--device cuda: CUDA is not available on this machine; use --device cpu (or auto)"
            )
        if device.index is None:
            device = torch.device(
                "cuda", dist_info.local_rank % torch.cuda.device_count()
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(
            "--device mps: MPS is not available on this machine; use --device cpu (or auto)"
        )
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(
            f"--device {request!r} is not supported; use auto, cuda, cuda:N, mps or cpu"
        )
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), about 3x its float32 rate.

    Elsewhere bf16 on a CPU is emulated and slower than float32. Reads torch's CPU feature
    probes; a torch without them answers False.
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    return False


def resolve_amp_dtype(request: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32.

    ``auto`` is the fastest precision that trains reliably on the device: bf16 (else fp16 with
    loss scaling) on CUDA; bf16 on a CPU with native bf16 (AVX512-BF16 or AMX: AudioMAE++ and
    AudioMAE train 1.7-2.2x faster than in float32, ``bench/models.py``); float32 elsewhere.
    """
    if request == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[request]


def derive_seed(seed: int, rank: int, stage_index: int) -> int:
    """Independent streams per rank and per stage: a resumed run that skips finished stages
    draws exactly what an uninterrupted one draws in the stages it runs."""
    return (seed * 1_000_003 + stage_index * 10_007 + rank) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def configure_determinism(enabled: bool) -> None:
    """``--deterministic``: reproducible kernels; otherwise allow TF32 matmuls on Ampere+ GPUs (fp32 runs)."""
    if not enabled:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return
    # cuBLAS needs this before its first call to give reproducible results.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def accepted_kwargs(
    target: Callable[..., Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The subset of ``kwargs`` that ``target``'s signature takes (all of them if it takes **kwargs)."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(kwargs)
    return {key: value for key, value in kwargs.items() if key in parameters}


# --------------------------------------------------------------------------- data
class ShardedEpochSampler(Sampler[int]):
    """Indices of one epoch for one rank, resumable mid-epoch.

    The order is a pure function of ``(seed, epoch)``, so a resumed run rebuilds it and skips
    the first ``start`` indices. The epoch is padded (by wrapping) or truncated to a multiple
    of ``world_size`` and dealt round-robin, so every rank sees the same number of samples.
    With ``epoch_order`` (a data set's own ``epoch_order(seed, epoch)``, e.g. tar shards read
    shard by shard) that order is used when shuffling, and each rank takes a contiguous
    block of it instead, so it reads about 1/world of the shards.
    """

    def __init__(
        self,
        num_items: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        start: int = 0,
        epoch_order: Callable[[int, int], Sequence[int]] | None = None,
    ) -> None:
        if num_items < 1:
            raise ValueError("cannot sample from an empty data set")
        self.epoch_order = epoch_order
        self._order: tuple[tuple[int, int], list[int]] | None = None
        self.num_items, self.rank, self.world_size = num_items, rank, world_size
        self.seed, self.epoch, self.shuffle, self.drop_last, self.start = (
            seed,
            epoch,
            shuffle,
            drop_last,
            start,
        )

    def shard(self) -> list[int]:
        if self.epoch_order is not None and self.shuffle:
            order = self._own_order()
        elif self.shuffle:
            generator = torch.Generator().manual_seed(
                (self.seed * 100_003 + self.epoch) % (2**63 - 1)  # any --seed fits
            )
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        if self.drop_last and self.num_items >= self.world_size:
            order = order[: self.num_items - self.num_items % self.world_size]
        else:
            padding = (-self.num_items) % self.world_size
            order = order + (order * (padding // len(order) + 1))[:padding]
        if self.epoch_order is not None:  # contiguous: a rank reads its own shards
            per_rank = len(order) // self.world_size
            return order[self.rank * per_rank : (self.rank + 1) * per_rank]
        return order[self.rank :: self.world_size]

    def _own_order(self) -> list[int]:
        """The data set's own order of this epoch (computed once: it may be millions long)."""
        assert self.epoch_order is not None
        if self._order is None or self._order[0] != (self.seed, self.epoch):
            order = list(self.epoch_order(self.seed, self.epoch))
            if sorted(order) != list(range(self.num_items)):
                raise ValueError("epoch_order must return each index exactly once")
            self._order = ((self.seed, self.epoch), order)
        return self._order[1]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start :])

    def __len__(self) -> int:
        return max(0, len(self.shard()) - self.start)


def epoch_order_of(dataset: Any) -> Callable[[int, int], list[int]] | None:
    """``dataset``'s own ``epoch_order(seed, epoch)`` (sharded data: shard-local reads), for a
    ``Subset`` (a fold) the parent's order restricted to it; None for other data sets.
    """
    own = getattr(dataset, "epoch_order", None)
    if own is not None or not isinstance(dataset, Subset):
        return own
    parent = epoch_order_of(dataset.dataset)
    position = {index: i for i, index in enumerate(dataset.indices)}
    if parent is None or len(position) != len(dataset.indices):
        return None  # a subset that repeats indices keeps the plain order

    def order(seed: int, epoch: int) -> list[int]:
        return [position[i] for i in parent(seed, epoch) if i in position]

    return order


def collate_signals(
    batch: list[tuple[torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack ``(signal, label)`` pairs into ``(signals, labels, lengths)``.

    Clips of unequal length are zero-padded at the end to the longest; ``lengths`` (samples
    per clip) tells the transform where each clip's padding starts, so it cuts the model's
    window from real audio only.
    """
    signals = [item[0] for item in batch]
    labels = torch.tensor([int(item[1]) for item in batch], dtype=torch.long)
    lengths = torch.tensor([s.shape[-1] for s in signals], dtype=torch.long)
    length = int(lengths.max())
    if any(s.shape[-1] != length for s in signals):
        signals = [
            torch.nn.functional.pad(s, (0, length - s.shape[-1])) for s in signals
        ]
    return torch.stack(signals).float(), labels, lengths


class FoldSubset(Subset):
    """A ``Subset`` that keeps the parent's records and class names (for reports and plots)."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        super().__init__(dataset, list(indices))
        self.class_names = list(getattr(dataset, "class_names", []))
        records = getattr(dataset, "records", None)
        self.records = [records[i] for i in self.indices] if records is not None else []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def split_by_folds(dataset: Any, folds: Sequence[int]) -> FoldSubset:
    """The records of ``folds``; an unknown fold is a user error naming the ones that exist."""
    available = folds_of(dataset.records)
    unknown = sorted(set(folds) - set(available))
    if unknown:
        raise UsageError(
            f"folds {unknown} do not exist in {type(dataset).__name__}; available folds: {available}"
        )
    return FoldSubset(dataset, indices_in_folds(dataset.records, folds))


# --------------------------------------------------------------------------- context
@dataclass(frozen=True)
class RunRecord:
    """What every step of one run shares, fixed before the first: where, on what, how seeded.

    ``options`` are the run flags (``--seed``, ``--steps``, ``--smoke``, ...), ``dist`` this
    process's rank and world size, ``device``/``amp_dtype`` where and in what precision it
    computes, ``out_dir`` the run folder.
    """

    name: str  # the spec's name
    spec_hash: str
    options: RunOptions
    dist: DistInfo
    device: torch.device
    amp_dtype: torch.dtype | None
    out_dir: Path

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def smoke(self) -> bool:
        return bool(self.options.smoke)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler for fp16 (a pass-through otherwise)."""
        return torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )

    def compile(self, module: nn.Module) -> nn.Module:
        return torch.compile(module) if self.options.compile else module

    def distribute(
        self, module: nn.Module, *, find_unused_parameters: bool = False
    ) -> nn.Module:
        """Wrap in DDP when running under torchrun (identity otherwise)."""
        if not self.dist.enabled or not any(
            p.requires_grad for p in module.parameters()
        ):
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )


@dataclass(frozen=True)
class Components:
    """The spec's data set, transform and model, built from their ``Config`` sections.

    ``dataset()`` is the whole data set (all folds), built once per run; recipes split it
    with ``split_by_folds``. Under ``--smoke`` it is the spec's synthetic smoke data.
    """

    pipeline: Pipeline
    config: Any
    run: RunRecord
    _built: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def settings(self, section: str) -> dict[str, Any]:
        """The ``Config`` section ``section`` as a dict (``--<section>.<field>`` flags applied)."""
        return dataclasses.asdict(getattr(self.config, section))

    def model(self, **overrides: Any) -> nn.Module:
        """``pipeline.model(**model config)``; overrides the model does not take are dropped."""
        kwargs = self.settings("model")
        kwargs.update(accepted_kwargs(self.pipeline.model, overrides))
        return _construct("model", self.pipeline.model, kwargs).to(self.run.device)

    def transform(self) -> nn.Module:
        kwargs = self.settings("transform")
        transform = _construct("transform", self.pipeline.transform, kwargs)
        # Precomputed features (feature_shards): the data set checks that this transform made
        # them and leaves only its part after the features to run.
        adapt = getattr(self.dataset(), "adapt_transform", None)
        if adapt is not None:
            transform = adapt(transform, kwargs)
        return transform.to(self.run.device)

    def check_fit(self, model: nn.Module, transform: nn.Module) -> None:
        """Fail before training, naming the flags, when data, transform and model do not fit together."""
        dataset = self.dataset()
        data_rate, transform_rate = getattr(dataset, "sample_rate", None), getattr(
            transform, "sample_rate", None
        )
        if (
            data_rate is not None
            and transform_rate is not None
            and int(data_rate) != int(transform_rate)
        ):
            raise UsageError(
                f"the data set delivers {data_rate} Hz audio but the transform expects {transform_rate} Hz; "
                "set --data.sample_rate and --transform.sample_rate to the same rate"
            )
        output_shape = getattr(transform, "output_shape", None)
        img_size, in_chans = getattr(model, "img_size", None), getattr(
            model, "in_chans", None
        )
        if output_shape is None or img_size is None:
            return
        channels, frames, bins = output_shape(int(dataset[0][0].shape[-1]))
        if (channels, frames, bins) != (in_chans, *img_size):
            raise UsageError(
                f"the transform makes [{channels}, {frames}, {bins}] (channels, frames, bins) but the model expects "
                f"[{in_chans}, {img_size[0]}, {img_size[1]}]; set --model.img_size {frames} {bins} and --model.in_chans "
                f"{channels}, or change the transform (e.g. --transform.target_frames)"
            )

    def dataset(self) -> Any:
        """The whole data set (all folds), built once per run; recipes split it by folds."""
        if "dataset" not in self._built:
            self._built["dataset"] = self._build_dataset()
        return self._built["dataset"]

    def _build_dataset(self) -> Any:
        data_cfg = self.settings("data") if hasattr(self.config, "data") else {}
        options = self.run.options
        if options.smoke:
            if self.pipeline.smoke_data is None:
                raise UsageError(
                    f"spec {self.pipeline.name!r} has no smoke data set; --smoke needs one"
                )
            cls = self.pipeline.smoke_data
            kwargs = dict(self.pipeline.smoke.get("data", {}))
            # Keep the real data set's sample rate so the transform sees what it expects.
            for shared in ("sample_rate",):
                if shared in data_cfg and shared not in kwargs:
                    kwargs[shared] = data_cfg[shared]
        else:
            cls = self.pipeline.data
            kwargs = dict(data_cfg)
            if options.data_dir is not None:
                kwargs["root"] = options.data_dir
            if options.download:
                kwargs["download"] = True
        kwargs.setdefault(
            "folds", None
        )  # all folds, unless --data.folds narrowed the set
        kwargs = accepted_kwargs(cls, kwargs)
        try:
            dataset = cls(**kwargs)
        except ImportError as error:
            # An optional package it needs (e.g. h5py); the message names it.
            raise UsageError(f"data set {cls.__name__}: {error}") from None
        except (OSError, ValueError) as error:
            # Missing or unreadable files, a folder in the way, a failed download.
            hint = "pass --data-dir PATH" + (
                ", or --download to fetch it"
                if "download" in inspect.signature(cls).parameters
                else ""
            )
            raise UsageError(f"data set {cls.__name__}: {error} ({hint})") from None
        if len(dataset) == 0:
            raise UsageError(f"data set {cls.__name__} ({kwargs}) is empty")
        return dataset


def _construct(section: str, cls: type, kwargs: dict[str, Any]) -> Any:
    """``cls(**kwargs)``; a setting the component rejects is a user error naming its flags."""
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise UsageError(
            f"{section}: {error} (change the --{section}.<field> flags)"
        ) from None


@dataclass(frozen=True)
class Handoff:
    """What steps hand to the steps after them: file paths, None where no step made one.

    ``mae_pretrain`` hands on its encoder checkpoint (``finetune``, ``embed``, the probes and
    ``hear`` start from it), ``finetune`` its classifier checkpoint, ``embed`` its
    embeddings file. ``pipeline_state.json`` keeps each step's, so ``--resume`` hands them
    on for the steps it skips.
    """

    encoder_checkpoint: str | None = None
    classifier_checkpoint: str | None = None
    embeddings: str | None = None

    def then(self, later: "Handoff") -> "Handoff":
        """These hand-offs, with those a later step made replacing them."""
        made = {k: v for k, v in dataclasses.asdict(later).items() if v is not None}
        return dataclasses.replace(self, **made)

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> "Handoff":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: str(v) for k, v in record.items() if k in names and v})


@dataclass(frozen=True)
class StepResult:
    """What a recipe returns: its summary (``<section>/summary.json``) and its hand-offs."""

    summary: dict[str, Any]
    handoff: Handoff = field(default_factory=Handoff)


@dataclass(frozen=True)
class Stage:
    """One recipe step as it runs: the run record, the step's section and inputs, and its services.

    ``section`` names the step's flags (``--<section>.<field>``) and folder
    (``stage_dir = <out>/<section>``); ``index`` is its place in the pipeline (it seeds the
    step); ``resume`` is ``--resume`` unless the step runs afresh. ``inputs`` are the
    hand-offs of the steps before it. ``metrics`` (progress, JSONL, TensorBoard, summaries),
    ``plots`` and ``stop`` (SIGTERM/SIGINT) are the run's own; ``checkpointer()`` makes
    this step's.
    """

    run: RunRecord
    section: str
    index: int
    resume: bool
    components: Components
    inputs: Handoff
    metrics: MetricsLogger
    plots: Plotter
    stop: StopFlag

    @property
    def stage_dir(self) -> Path:
        return self.run.out_dir / self.section

    @property
    def seed(self) -> int:
        """This rank's seed for this step."""
        return derive_seed(self.run.options.seed, self.run.dist.rank, self.index)

    @property
    def data_seed(self) -> int:
        """Shared by all ranks (so they deal the same permutation), distinct per step."""
        return derive_seed(self.run.options.seed, 0, self.index)

    @property
    def max_steps(self) -> int | None:
        """``--steps``: the cap on a training step's optimizer steps."""
        return self.run.options.steps

    def info(self, message: str) -> None:
        self.metrics.info(f"[{self.section}] {message}")

    def warn(self, message: str) -> None:
        """A result that may mean nothing (see ``components.recipes.guards``): one line."""
        self.metrics.info(f"[{self.section}] warning: {message}")

    def checkpointer(
        self, subdir: str | None = None, *, keep_last: int = 3
    ) -> Checkpointer:
        """Checkpoints of this step (``<out>/<section>[/<subdir>]``); a fresh run clears old ones."""
        directory = self.stage_dir if subdir is None else self.stage_dir / subdir
        checkpointer = Checkpointer(
            directory=directory,
            spec_name=self.run.name,
            spec_hash=self.run.spec_hash,
            model_config=self.components.settings("model"),
            keep_last=keep_last,
            enabled=self.run.is_main,
            resume_keys=RESUME_KEYS,
        )
        if not self.resume:
            checkpointer.clear()
        return checkpointer

    def loader(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        epoch: int = 0,
        start: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
    ) -> DataLoader:
        """A loader over this rank's shard; ``start`` skips samples already seen in this epoch."""
        if self.run.smoke:
            num_workers = 0  # worker start-up would dominate a seconds-long smoke run
        sampler = ShardedEpochSampler(
            len(dataset),
            rank=self.run.dist.rank,
            world_size=self.run.dist.world_size,
            seed=self.data_seed,
            epoch=epoch,
            shuffle=shuffle,
            drop_last=drop_last,
            start=start,
            epoch_order=epoch_order_of(dataset),
        )
        # A private generator: creating the iterator must not draw from the global RNG,
        # or a run resumed mid-epoch would draw differently from an uninterrupted one.
        generator = torch.Generator().manual_seed(
            (self.data_seed + epoch) % (2**63 - 1)
        )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate_signals,
            pin_memory=self.run.device.type == "cuda",
            drop_last=drop_last,
            generator=generator,
            persistent_workers=False,
            worker_init_fn=worker_leaves_signals_to_main,
        )


# --------------------------------------------------------------------------- pipeline
def _load_pipeline_state(path: Path, pipeline: Pipeline) -> dict[str, Any]:
    if not path.is_file():
        return {"completed": {}}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(
            f"{path} is unreadable ({error}); rerun without --resume or choose another --out-dir"
        ) from None
    if (
        record.get("spec_name") != pipeline.name
        or record.get("spec_hash") != pipeline.spec_hash
    ):
        raise UsageError(
            f"{path.parent} holds a run of spec {record.get('spec_name')!r} (hash {str(record.get('spec_hash'))[:12]}), "
            f"not of this script ({pipeline.name!r}, hash {pipeline.spec_hash[:12]}); rerun without --resume or choose another --out-dir"
        )
    return record


def run_pipeline(
    pipeline: Pipeline, config_cls: type, argv: Sequence[str] | None = None
) -> int:
    """Parse flags into ``config_cls``, set up the run, and run every step of ``pipeline``."""
    try:
        config = parse_config(pipeline, config_cls, argv)
    except (
        SystemExit
    ) as exit_request:  # --help, or argparse's own error message (exit 2)
        return int(exit_request.code or 0)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_determinism(config.run.deterministic)
    try:
        dist_info = dist_info_from_env()
        device = resolve_device(config.run.device, dist_info)
        amp_dtype = resolve_amp_dtype(config.run.dtype, device)
        init_distributed(dist_info, device)
    except (UsageError, DistributedSetupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = StopFlag()
    stop.install()
    try:
        return _run_steps(pipeline, config, dist_info, device, amp_dtype, stop)
    except (UsageError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        stop.uninstall()
        shutdown_distributed()


def check_out_dir(out_dir: Path) -> None:
    """Create ``out_dir``, or say in one line why it cannot be the run's folder."""
    for folder in (out_dir, *out_dir.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                where = "is" if folder == out_dir else f"lies under {folder}, which is"
                raise UsageError(
                    f"--out-dir {out_dir} {where} a file, not a folder; choose another --out-dir"
                )
            break
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"--out-dir {out_dir} cannot be created ({error.strerror or error});"
            " choose a folder you can write to"
        ) from None


# Step settings that cannot change a result: a changed one does not make --resume run a step again.
RESULT_NEUTRAL_SETTINGS = frozenset(
    {"num_workers", "log_every", "checkpoint_every", "keep_last", "plot_every"}
)
_UNSET = object()


def json_form(value: Any) -> Any:
    """``value`` as pipeline_state.json holds it (tuples become lists)."""
    return json.loads(json.dumps(value))


def result_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A step's settings without those that cannot change its result."""
    return {k: v for k, v in settings.items() if k not in RESULT_NEUTRAL_SETTINGS}


def setting_changes(previous: Any, current: Any, prefix: str = "") -> list[str]:
    """``["model.depth: 1 -> 2", ...]``: each setting that differs, with its old and new value."""
    if isinstance(previous, dict) and isinstance(current, dict):
        changes: list[str] = []
        for key in sorted(set(previous) | set(current)):
            changes += setting_changes(
                previous.get(key, _UNSET), current.get(key, _UNSET), f"{prefix}{key}."
            )
        return changes
    if previous == current:
        return []
    shown = [
        "(unset)" if value is _UNSET else repr(value) for value in (previous, current)
    ]
    shown = [text if len(text) <= 80 else text[:77] + "..." for text in shown]
    return [f"{prefix.rstrip('.')}: {shown[0]} -> {shown[1]}"]


def move_aside(folder: Path) -> Path | None:
    """Rename ``folder`` to the first free ``<folder>.old-<n>`` (nothing is deleted); None if absent."""
    if not (folder.exists() or folder.is_symlink()):
        return None
    n = 1
    while (
        folder.with_name(f"{folder.name}.old-{n}").exists()
        or folder.with_name(f"{folder.name}.old-{n}").is_symlink()
    ):
        n += 1
    target = folder.with_name(f"{folder.name}.old-{n}")
    folder.rename(target)
    return target


# Step settings that name folds of the data set (mae_pretrain, finetune, linear_probe, knn, kfold).
FOLD_SETTINGS = ("folds", "train_folds", "eval_folds")


def check_step_folds(components: Components, steps: Sequence[Step]) -> None:
    """Each step's fold settings (``--probe.eval_folds 9``) name folds of the data set.

    Checked before the first step runs, not after hours of pre-training. Under ``--smoke``
    the synthetic data has folds of its own and the recipes fall back to their default
    split (as ``resolve_split`` does), so nothing is checked there.
    """
    if components.run.smoke:
        return
    wanted = [
        (step.section, name, value)
        for step in steps
        for name, value in components.settings(step.section).items()
        if name in FOLD_SETTINGS and isinstance(value, (list, tuple))
    ]
    if not wanted:
        return
    dataset = components.dataset()
    available = folds_of(dataset.records)
    # Folds the data set's own listing names (ESC-50's CSV) but that hold no clip here.
    known = set(available) | set(getattr(dataset, "listed_folds", ()))
    for section, name, value in wanted:
        unknown = sorted(set(value) - known)
        if unknown:
            raise UsageError(
                f"--{section}.{name}: folds {unknown} do not exist; the data set has folds {available}"
            )


def _run_steps(
    pipeline: Pipeline,
    config: Any,
    dist_info: DistInfo,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    stop: StopFlag,
) -> int:
    options: RunOptions = config.run
    default_out = f"runs/{pipeline.name}" + ("-smoke" if options.smoke else "")
    out_dir = Path(options.out_dir or default_out)
    check_out_dir(out_dir)
    metrics = MetricsLogger(out_dir, enabled=dist_info.is_main)
    plots = Plotter(
        out_dir,
        enabled=dist_info.is_main,
        info=lambda message: metrics.info(f"[{pipeline.name}] {message}"),
    )
    run = RunRecord(
        name=pipeline.name,
        spec_hash=pipeline.spec_hash,
        options=options,
        dist=dist_info,
        device=device,
        amp_dtype=amp_dtype,
        out_dir=out_dir,
    )
    components = Components(pipeline, config, run)

    def info(message: str) -> None:
        metrics.info(f"[{pipeline.name}] {message}")

    state_path = out_dir / "pipeline_state.json"
    if not options.resume and dist_info.is_main:
        # A fresh run in a used folder: a later --resume must not pick up the old run's steps.
        for stale in (state_path, metrics.jsonl_path):
            stale.unlink(missing_ok=True)
        # Its event files too: TensorBoard would draw the old run's curves into this one's.
        if metrics.tensorboard_dir.is_dir():
            shutil.rmtree(metrics.tensorboard_dir)
    record = (
        _load_pipeline_state(state_path, pipeline)
        if options.resume
        else {"completed": {}}
    )
    # Finished steps are reused on --resume only if what the weights depend on is unchanged.
    # Those are the data, transform and model sections; recipe sections are per step (a notebook
    # that runs one step per cell passes pipelines with fewer steps, so the step set varies).
    # In their JSON form (tuples become lists), as pipeline_state.json holds the previous run's.
    fixed = json_form(
        {
            name: dataclasses.asdict(getattr(config, name))
            for name in ("data", "transform", "model")
            if hasattr(config, name)
        }
    )
    if (
        not options.smoke
        and options.data_dir is not None
        and "root" in fixed.get("data", {})
    ):
        fixed["data"]["root"] = options.data_dir  # where the data set is read from
    fixed["smoke"] = options.smoke
    previous = record.get("fixed_config")
    if previous is not None and previous != fixed:
        changed = setting_changes(
            {key: value for key, value in previous.items() if key != "smoke"},
            {key: value for key, value in fixed.items() if key != "smoke"},
        )
        if bool(previous.get("smoke")) != options.smoke:
            was, now = ("on", "off") if previous.get("smoke") else ("off", "on")
            changed.append(f"--smoke: {was} -> {now}")
        raise UsageError(
            f"{out_dir} holds a run with other settings ({'; '.join(changed)}); resume with the same flags, "
            "or choose another --out-dir"
        )
    record.update(
        spec_name=pipeline.name, spec_hash=pipeline.spec_hash, fixed_config=fixed
    )
    # A run killed inside its first step has checkpoints but no pipeline state yet.
    something_to_resume = state_path.is_file() or any(out_dir.rglob("last.pt"))
    dtype_name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[
        amp_dtype
    ]
    info(
        f"device {device}, dtype {dtype_name}, world size {dist_info.world_size}, out {out_dir}"
        + (", smoke run" if options.smoke else "")
        + (", resuming" if options.resume and something_to_resume else "")
    )
    if options.resume and not something_to_resume:
        info(f"--resume: nothing to resume in {out_dir}; starting a new run")
    started = time.time()
    summaries: dict[str, Any] = {}
    # Each step's record from the previous run, its settings now, and which of its own
    # settings (those that can change a result) differ from the ones it finished with.
    plan = []
    for step in pipeline.steps:
        done = record["completed"].get(step.section)
        settings = json_form(components.settings(step.section))
        changes = (
            setting_changes(
                result_settings(done["config"]),
                result_settings(settings),
                f"{step.section}.",
            )
            if done is not None and "config" in done
            else []
        )
        plan.append((step, done, settings, changes))

    def reusable(done: dict[str, Any] | None, changes: list[str]) -> bool:
        # A stage cut short by --steps continues when resumed with another cap.
        return (
            done is not None
            and not done.get("running", False)
            and not done.get("stale", False)
            and not changes
            and (
                not done.get("capped", False) or done.get("steps_cap") == options.steps
            )
        )

    upstream_ran = False  # a step ran in this session: the results after it are stale
    handoff = Handoff()  # what the steps so far hand on
    section = pipeline.name  # the step running now, for the stop message
    try:
        first = next(
            (
                i
                for i, (_, done, _, changes) in enumerate(plan)
                if not reusable(done, changes)
            ),
            len(plan),
        )
        check_step_folds(components, pipeline.steps[first:])
        for index, (step, done, settings, changes) in enumerate(plan):
            section = step.section
            if not upstream_ran and reusable(done, changes):
                assert done is not None
                # (pipeline_state.json files of earlier versions call the hand-offs "state")
                handoff = handoff.then(
                    Handoff.from_json(done.get("handoff", done.get("state", {})))
                )
                summaries[step.section] = done["summary"]
                metrics.info(f"[{section}] already completed; skipped (--resume)")
                continue
            # A finished step runs again, afresh, when its settings changed or one before it ran
            # (a stage cut short by --steps continues from its checkpoint otherwise); what it
            # wrote is moved aside, never deleted.
            # (also a step stopped part-way: its checkpoint was trained after the old results)
            afresh = upstream_ran or (
                done is not None and (bool(changes) or bool(done.get("stale", False)))
            )
            stage = Stage(
                run=run,
                section=step.section,
                index=index,
                resume=bool(options.resume) and not afresh,
                components=components,
                inputs=handoff,
                metrics=metrics,
                plots=plots,
                stop=stop,
            )
            if afresh and done is not None:
                moved = move_aside(stage.stage_dir) if run.is_main else None
                stage.info(
                    (
                        f"its settings changed since it {'started' if done.get('running') else 'finished'} ({'; '.join(changes)})"
                        if changes
                        else "an earlier step ran again since this one "
                        + ("started" if done.get("running") else "finished")
                    )
                    + ": running it afresh"
                    + (f"; its earlier outputs are in {moved}" if moved else "")
                )
            # While it runs, its record says so with the settings it runs with (a run stopped now
            # resumes it only with the same settings), and the steps after it are out of date.
            record["completed"][step.section] = {"running": True, "config": settings}
            earlier = {s.section for s in pipeline.steps[: index + 1]}
            for name, entry in record["completed"].items():
                if name not in earlier:
                    entry["stale"] = True
            if run.is_main:
                write_json_atomic(record, state_path)
            barrier(dist_info)
            upstream_ran = True
            seed_everything(stage.seed)
            result = step.run(stage, **components.settings(step.section))
            if not isinstance(result, StepResult):
                name = getattr(step.run, "__name__", repr(step.run))
                raise UsageError(
                    f"step {step.section}: recipe {name} returned a {type(result).__name__}; a recipe "
                    "returns StepResult(summary, Handoff(...)) (see Stage in the runtime)"
                )
            barrier(dist_info)  # later steps on other ranks read what rank 0 just wrote
            handoff = handoff.then(result.handoff)
            summary = result.summary
            summaries[step.section] = summary
            capped = isinstance(summary.get("steps"), int) and summary[
                "steps"
            ] < summary.get("total_steps", 0)
            record["completed"][step.section] = {
                "summary": summary,
                "handoff": result.handoff.to_json(),
                "capped": capped,
                "steps_cap": options.steps,
                "config": settings,
            }
            if run.is_main:
                write_json_atomic(record, state_path)
                metrics.write_summary(summary, f"{step.section}/summary.json")
    except StopRequested as stopped:
        metrics.info(f"[{section}] {stopped}; resume with --resume")
        return 0
    finally:
        metrics.close()
    overall = {
        "spec_name": pipeline.name,
        "spec_hash": pipeline.spec_hash,
        "smoke": options.smoke,
        "world_size": dist_info.world_size,
        "device": str(device),
        "wall_time_s": round(time.time() - started, 3),
        "steps": summaries,
        "config": dataclasses.asdict(config),
    }
    path = metrics.write_summary(overall)
    info(f"done in {overall['wall_time_s']:.1f} s; summary: {path}")
    return 0


def eval_loader(
    run: RunRecord, dataset: Dataset, batch_size: int, num_workers: int = 0
) -> tuple[DataLoader, list[int]]:
    """A loader over this rank's share of ``dataset`` in order, without padding (so that
    summed counts over ranks are exact), and the dataset indices it yields."""
    indices = list(range(run.dist.rank, len(dataset), run.dist.world_size))
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=0 if run.smoke else num_workers,  # as in Stage.loader
        collate_fn=collate_signals,
        pin_memory=run.device.type == "cuda",
        worker_init_fn=worker_leaves_signals_to_main,
    )
    return loader, indices
