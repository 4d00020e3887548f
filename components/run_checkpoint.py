"""Checkpoints that survive being killed at any moment, and load safely.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then
moved over its final name with ``os.replace`` (atomic on POSIX and Windows), so a reader sees
the old file or the new one, never half of one. ``last.pt`` (and ``best.pt``) are hard links
to the newest step file, so keeping the last K costs no extra writes. Loading always uses
``torch.load(..., weights_only=True)``: a checkpoint is tensors and plain containers only, and
a malicious file cannot run code. Each checkpoint records the spec name and hash and the
model's config, so resuming from another spec's or model's checkpoint fails with a clear
message instead of a shape error deep inside ``load_state_dict``.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

CHECKPOINT_FORMAT = "sigmae-checkpoint/1"
# What the training engine reads back on --resume; a checkpoint without one is not resumable.
RESUME_KEYS = ("model", "optimizer", "scaler", "rng", "step")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used here (unreadable, other spec, other model)."""


def fsync_directory(directory: Path) -> None:
    """Persist a rename: on POSIX the directory entry itself must reach the disk."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; its rename is durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(handle)`` to a temporary file, fsync, ``os.replace``: never a torn file at ``path``.

    The temporary file sits in ``path``'s folder (a rename across file systems is a copy) and
    is removed if anything fails; the folder is fsync'ed so the rename itself survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``atomic_write``."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_link(source: Path, destination: Path) -> None:
    """Point ``destination`` at ``source``'s bytes atomically (hard link; copy where links fail)."""
    tmp = destination.with_name(f".{destination.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, destination)
    fsync_directory(destination.parent)


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def capture_rng_state() -> dict[str, Any]:
    """Every random stream a training step may draw from (python, torch CPU, CUDA, MPS)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    if "mps" in state and hasattr(torch, "mps") and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def load_checkpoint_file(path: Path, require_format: bool = True) -> dict[str, Any]:
    """Safe load (``weights_only=True``) onto the CPU, with a clear error for a bad file.

    ``require_format=False`` also returns other dicts (e.g. an official release's state dict).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn, foreign or pickled-object file
        # torch's own text goes on to suggest weights_only=False: the one thing not to do.
        reason = str(error).split(". ")[0].splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"cannot load checkpoint {path} ({type(error).__name__}: {reason}); "
            "only checkpoints written by this script (tensors and plain containers) can be "
            "loaded: remove the file or start a fresh run in another --out-dir"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path} holds a {type(payload).__name__}, not a checkpoint dictionary"
        )
    if require_format and payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a checkpoint written by a sigmae script (no '{CHECKPOINT_FORMAT}' marker)"
        )
    return payload


def describe_state_dict_mismatch(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor]
) -> str:
    """A short account of why ``state_dict`` does not fit ``model`` (empty when it fits)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    reshaped = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in sorted(set(own) & set(state_dict))
        if tuple(own[key].shape) != tuple(state_dict[key].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        parts.append(f"{len(reshaped)} with other shapes (e.g. {reshaped[0]})")
    return ", ".join(parts)


def load_model_weights(
    model: torch.nn.Module, payload: dict[str, Any], path: Path
) -> None:
    """``load_state_dict`` that explains a mismatch as "another model" instead of a raw error."""
    problem = describe_state_dict_mismatch(model, payload["model"])
    if problem:
        raise CheckpointError(
            f"checkpoint {path} holds weights of another model ({problem}); it was written by spec "
            f"{payload.get('spec_name')!r} with model config {payload.get('model_config')}. "
            "Use a checkpoint of this model, or a fresh --out-dir"
        )
    model.load_state_dict(payload["model"])


@dataclass
class Checkpointer:
    """Step checkpoints of one stage in ``directory``: ``step_00000042.pt``, ``last.pt``, ``best.pt``.

    Only the main rank writes (``enabled``); every rank reads. ``keep_last`` step files are
    kept; ``last.pt`` / ``best.pt`` are links, so pruning never deletes what they point at.
    """

    directory: Path
    spec_name: str
    spec_hash: str
    model_config: dict[str, Any]
    keep_last: int = 3
    enabled: bool = True
    resume_keys: tuple[str, ...] = ("model", "step")  # the runtime asks for RESUME_KEYS

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {self.keep_last}")
        for link in (self.last_path, self.best_path):
            if link.is_dir():
                raise CheckpointError(
                    f"{link} is a folder, where this run keeps a checkpoint file; move it"
                    " away, or choose another --out-dir"
                )
        if self.enabled:
            self.directory.mkdir(parents=True, exist_ok=True)
            for stale in self.directory.glob(
                ".*.tmp"
            ):  # left by a run killed mid-write
                stale.unlink(missing_ok=True)

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def step_files(self) -> list[Path]:
        return sorted(self.directory.glob("step_*.pt"))

    def clear(self) -> None:
        """Forget a previous run's checkpoints (a fresh start in an existing folder)."""
        if not self.enabled:
            return
        for path in [*self.step_files(), self.last_path, self.best_path]:
            path.unlink(missing_ok=True)

    def save(
        self, payload: dict[str, Any], *, step: int, best: bool = False
    ) -> Path | None:
        """Write ``payload`` as the checkpoint of ``step``; link it as last (and best)."""
        if not self.enabled:
            return None
        stamped = {
            "format": CHECKPOINT_FORMAT,
            "spec_name": self.spec_name,
            "spec_hash": self.spec_hash,
            "model_config": self.model_config,
            **payload,
            "step": int(step),
        }
        path = self.directory / f"step_{step:08d}.pt"
        atomic_torch_save(stamped, path)
        atomic_link(path, self.last_path)
        if best:
            atomic_link(path, self.best_path)
        for old in self.step_files()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def load_last(self) -> dict[str, Any] | None:
        """The newest checkpoint of this stage, checked to belong to this spec and model; None if none."""
        if not self.last_path.is_file():
            return None
        payload = load_checkpoint_file(self.last_path)
        self.check_compatible(payload, self.last_path)
        missing = [key for key in self.resume_keys if key not in payload]
        if missing:
            raise CheckpointError(
                f"{self.last_path} has no {', '.join(repr(key) for key in missing)}: it is not"
                " a resumable checkpoint of this script; rerun without --resume, or choose"
                " another --out-dir"
            )
        return payload

    def check_compatible(self, payload: dict[str, Any], path: Path) -> None:
        """Resuming needs the same spec (name and hash) and the same model config."""
        if payload.get("spec_name") != self.spec_name:
            raise CheckpointError(
                f"{path} was written by spec {payload.get('spec_name')!r}, not {self.spec_name!r}; "
                "resume with the script that wrote it, or choose another --out-dir"
            )
        if payload.get("spec_hash") != self.spec_hash:
            raise CheckpointError(
                f"{path} was written by another version of spec {self.spec_name!r} (hash "
                f"{str(payload.get('spec_hash'))[:12]} vs {self.spec_hash[:12]}); exact resume needs the same "
                "script: rerun without --resume or choose another --out-dir"
            )
        if payload.get("model_config") != self.model_config:
            raise CheckpointError(
                f"{path} holds a model with config {payload.get('model_config')}, but this run builds "
                f"{self.model_config}; resume with the same model flags (and --smoke setting), or choose another --out-dir"
            )
