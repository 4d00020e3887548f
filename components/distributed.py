"""torchrun / DDP set-up for the emitted script: one code path for 1 or N processes.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; when they say more than one
process, every rank joins a process group (nccl on CUDA, gloo on CPU) and only rank 0 logs
and writes checkpoints. Run plainly, the same script is a single process and nothing here
does any communication. Multi-node runs are torchrun's job: the script needs no change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group when the job has several processes (idempotent)."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # MASTER_ADDR/MASTER_PORT come from torchrun (or a test harness); "env://" reads them.
    try:
        dist.init_process_group(
            backend=backend, rank=info.rank, world_size=info.world_size
        )
    except ValueError as error:  # e.g. WORLD_SIZE set by hand, MASTER_ADDR missing
        raise DistributedSetupError(f"{error}; launch with torchrun") from None


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
