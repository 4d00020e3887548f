"""torchrun / DDP set-up for the emitted script: one code path for 1 or N processes.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; when they say more than one
process, every rank joins a process group (nccl on CUDA, gloo on CPU) and only rank 0 logs
and writes checkpoints. Run plainly, the same script is a single process and nothing here
does any communication. Multi-node runs are torchrun's job: the script needs no change.

Two timeouts, each from an environment variable (seconds; bad values stop the run with one
line saying so):

- ``SIGMAE_DIST_TIMEOUT``: how long any collective of the process group (a gradient
  all-reduce, a barrier) waits for the other ranks before the job fails as hung. Default:
  torch's own, 600 s under NCCL and 1800 s under gloo.
- ``SIGMAE_MAIN_WAIT_TIMEOUT``: how long the other ranks wait, in ``wait_for_main``, for
  work that rank 0 does alone (a FiftyOne export, a similarity query, plots). Default
  21600 s (6 hours). They wait for a key rank 0 sets in the process group's own store (the
  rendezvous every rank already reaches), so the long wait needs no long timeout for the
  training collectives, which still name a hang within ``SIGMAE_DIST_TIMEOUT``, and no
  second process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from components.errors import UsageError

DIST_TIMEOUT_ENV = (
    "SIGMAE_DIST_TIMEOUT"  # seconds a collective waits (default: torch's)
)
MAIN_WAIT_TIMEOUT_ENV = (
    "SIGMAE_MAIN_WAIT_TIMEOUT"  # seconds ranks wait for rank 0's work
)
DEFAULT_NCCL_TIMEOUT_S = 600.0  # torch's defaults: 10 minutes under NCCL, 30 under gloo
DEFAULT_GLOO_TIMEOUT_S = 1800.0
DEFAULT_MAIN_WAIT_TIMEOUT_S = 6 * 3600.0


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (all zeros and one for a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class DistributedSetupError(RuntimeError):
    """torchrun's environment is inconsistent (a user or launcher error, not a bug)."""


def dist_info_from_env(environ: dict[str, str] | None = None) -> DistInfo:
    """Read torchrun's variables; a plain ``python script.py`` gives rank 0 of 1."""
    env = os.environ if environ is None else environ
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise DistributedSetupError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({error}); launch with torchrun"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistributedSetupError(
            f"RANK={rank} does not fit WORLD_SIZE={world_size}; launch with torchrun"
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def timeout_from_env(
    name: str, default_s: float, environ: dict[str, str] | None = None
) -> timedelta:
    """The timeout environment variable ``name`` sets (seconds), else ``default_s``."""
    env = os.environ if environ is None else environ
    text = env.get(name, "").strip()
    if not text:
        return timedelta(seconds=default_s)
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise DistributedSetupError(
            f"{name}={text!r} is not a positive number of seconds; set e.g. {name}={int(default_s)}"
            " or unset it for the default"
        )
    return timedelta(seconds=seconds)


class MainRankWait:
    """Where ranks wait for rank 0's work alone: the process group's key-value store.

    ``init_distributed`` takes the store its process group rendezvoused on (the TCP store
    torchrun's ranks already reach; no second group, no new connections) and
    ``shutdown_distributed`` drops it. ``calls`` numbers the waits, which every rank makes
    in the same order, so each has a key of its own.
    """

    store: Any = None
    timeout: timedelta = timedelta(seconds=DEFAULT_MAIN_WAIT_TIMEOUT_S)
    calls: int = 0


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group when the job has several processes (idempotent).

    Its collectives time out after ``SIGMAE_DIST_TIMEOUT`` seconds; ``wait_for_main`` waits
    on the group's store, up to ``SIGMAE_MAIN_WAIT_TIMEOUT``.
    """
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timeout_from_env(
        DIST_TIMEOUT_ENV,
        DEFAULT_NCCL_TIMEOUT_S if backend == "nccl" else DEFAULT_GLOO_TIMEOUT_S,
    )
    main_wait = timeout_from_env(MAIN_WAIT_TIMEOUT_ENV, DEFAULT_MAIN_WAIT_TIMEOUT_S)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # MASTER_ADDR/MASTER_PORT come from torchrun (or a test harness); "env://" reads them.
    try:
        dist.init_process_group(
            backend=backend,
            rank=info.rank,
            world_size=info.world_size,
            timeout=timeout,
        )
    except ValueError as error:  # e.g. WORLD_SIZE set by hand, MASTER_ADDR missing
        raise DistributedSetupError(f"{error}; launch with torchrun") from None
    MainRankWait.timeout, MainRankWait.calls = main_wait, 0
    MainRankWait.store = default_store()
    if MainRankWait.store is None:
        print(
            f"rank {info.rank}: warning: this torch gives no process-group store to wait on;"
            f" work rank 0 does alone must finish within {DIST_TIMEOUT_ENV}"
            f" ({timeout.total_seconds():.0f} s)",
            flush=True,
        )


def default_store() -> Any:
    """The key-value store the default process group was made with (None if torch hides it)."""
    get = getattr(dist.distributed_c10d, "_get_default_store", None)
    try:
        return get() if get is not None else None
    except (RuntimeError, ValueError):
        return None


def wait_for_main(info: DistInfo, what: str) -> None:
    """Every rank calls this after ``what``, work rank 0 did alone; the others wait for it.

    Rank 0 sets a key in the process group's store; the others wait for that key, up to
    ``SIGMAE_MAIN_WAIT_TIMEOUT`` seconds, not at the next collective of the process group,
    whose shorter timeout would end a long export as a hang. A wait past that limit stops
    the rank with one line naming the variable; a rank 0 that went away (it failed) is
    named as such. A no-op for one process.
    """
    if not info.enabled:
        return
    store = MainRankWait.store
    if store is None:  # a group made outside init_distributed, or no store to reach
        dist.barrier()
        return
    MainRankWait.calls += 1
    key = f"sigmae/rank0_done/{MainRankWait.calls}"
    if info.is_main:
        store.set(key, "done")
        return
    try:
        store.wait([key], MainRankWait.timeout)
    except RuntimeError as error:  # torch's DistStoreError / DistNetworkError
        seconds = MainRankWait.timeout.total_seconds()
        reason = " ".join(str(error).split())[:200]
        if "timeout" in reason.lower() or "timed out" in reason.lower():
            raise UsageError(
                f"rank {info.rank}: rank 0 did not finish {what} within {seconds:.0f} s ({reason});"
                f" if it needs longer, set {MAIN_WAIT_TIMEOUT_ENV} to more seconds (now"
                f" {seconds:.0f}), else see rank 0's messages"
            ) from None
        raise UsageError(  # rank 0 went away (it failed): its own message says why
            f"rank {info.rank}: rank 0 stopped before it finished {what} ({reason}); see rank 0's messages"
        ) from None


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    MainRankWait.store = None


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a small tensor over ranks (a no-op for one process); a new tensor on ``values``' device.

    NCCL only reduces CUDA tensors, so CPU values travel through this rank's GPU there.
    """
    if not info.enabled:
        return values.clone()
    out = values.clone().to(_collective_device(values))
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(values.device)


def _collective_device(tensor: torch.Tensor) -> torch.device:
    """Where ``tensor`` must be for a collective: NCCL only moves CUDA tensors, so CPU
    tensors travel through this rank's GPU there; other backends take them where they are.
    """
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's rows of ``x [b, ...]`` in rank order, and the world size.

    This rank's rows are ``x`` itself and keep their graph; the other ranks' arrive as
    constants. Ranks may hold different row counts (a smaller last batch). Without a
    process group of several ranks it returns ``(x, 1)`` and communicates nothing. Every
    rank must call it, as with any collective.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return x, 1
    world, rank = dist.get_world_size(), dist.get_rank()
    if world == 1:
        return x, 1
    device = _collective_device(x)
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([x.shape[0]], dtype=torch.long, device=device))
    sizes = [int(count) for count in counts]
    padded = x.detach().to(device)
    if x.shape[0] < max(sizes):
        filler = padded.new_zeros((max(sizes) - x.shape[0], *x.shape[1:]))
        padded = torch.cat([padded, filler])
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    rows = [part[:size].to(x.device) for part, size in zip(parts, sizes)]
    rows[rank] = x
    return torch.cat(rows), world


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
