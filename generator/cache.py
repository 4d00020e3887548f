"""A small content-addressed, on-disk cache shared by the generator's stages.

Entries are keyed by a sha256 over whatever determines them (file content, tool version,
options), so a stale entry can never be returned: changed input means a different key.
Writes are atomic (temporary file + ``os.replace``) and a corrupt or unreadable entry is
treated as a miss, so a crashed or concurrent build at worst costs a re-computation.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

CACHE_DIRNAME = ".sigmae-cache"


def content_key(*parts: str | bytes) -> str:
    """sha256 hex digest over ``parts``, length-prefixed so ("ab", "c") != ("a", "bc")."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def default_cache_dir(root: Path) -> Path:
    """``<root>/.sigmae-cache``: beside the catalog package, gitignored."""
    return Path(root) / CACHE_DIRNAME


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_pickle(path: Path) -> Any | None:
    """The unpickled object at ``path``, or None when it is missing or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        return pickle.loads(data)
    except Exception:  # corrupt, truncated or written by an incompatible version: a miss
        return None


def store_pickle(path: Path, value: Any) -> None:
    """Pickle ``value`` atomically; a cache that cannot be written (a full or read-only disk,
    a value pickle refuses) is silently skipped: it costs the next build the work, nothing else."""
    try:
        atomic_write_bytes(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001
        pass


# Entries are content-addressed, so an edited catalog leaves old ones behind. Once a day a
# writing build deletes those not written for a month (a still-used one is simply
# recomputed once): the cache stays bounded without any bookkeeping on reads.
PRUNE_EVERY_S = 24 * 3600
MAX_AGE_S = 30 * 24 * 3600


class TextCache:
    """One small text file per entry under ``<dir>/<namespace>/<key[:2]>/<key>``, plus memory.

    Per-entry files keep concurrent builds from overwriting each other's work and make
    a warm lookup one small read.
    """

    def __init__(self, directory: Path | None, namespace: str) -> None:
        self.directory = None if directory is None else Path(directory) / namespace
        self._memory: dict[str, str] = {}
        self._pruned = False

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / key

    def get(self, key: str) -> str | None:
        hit = self._memory.get(key)
        if hit is not None or self.directory is None:
            return hit
        try:
            checksum, _, text = self._path(key).read_text(encoding="utf-8").partition("\n")
        except (OSError, UnicodeDecodeError):
            return None
        if checksum != content_key(text):  # damaged on disk: recompute rather than trust it
            return None
        self._memory[key] = text
        return text

    def put(self, key: str, text: str) -> None:
        self._memory[key] = text
        if self.directory is None:
            return
        try:
            payload = f"{content_key(text)}\n{text}"
            atomic_write_bytes(self._path(key), payload.encode("utf-8"))
        except OSError:
            return
        if not self._pruned:
            self._pruned = True
            self.prune()

    def prune(self, *, now: float | None = None, force: bool = False) -> int:
        """Delete entries older than ``MAX_AGE_S`` (at most daily unless ``force``); returns how many."""
        if self.directory is None:
            return 0
        now = time.time() if now is None else now
        marker = self.directory / ".pruned"
        try:
            if not force and now - marker.stat().st_mtime < PRUNE_EVERY_S:
                return 0
        except OSError:
            pass  # never pruned: do it now
        removed = 0
        for entry in self.directory.glob("??/*"):
            try:
                if now - entry.stat().st_mtime > MAX_AGE_S:
                    entry.unlink()
                    removed += 1
            except OSError:
                continue  # another build removed or replaced it
        try:
            marker.touch()
        except OSError:
            pass
        return removed
