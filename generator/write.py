"""Write a build's files with an atomic folder swap, or compare them with what is on disk.

`write_outputs` fills a temporary folder beside the destination, then renames the old folder
aside, renames the new one in and deletes the old one: readers see either the previous build
or the new one, and a build that fails at any point leaves the previous output untouched.
Nothing is written outside `out_root` (file names are checked to be plain names).
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from generator.errors import OutputError


@dataclass(frozen=True)
class Drift:
    """How the files on disk differ from a fresh build."""

    changed: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    diff: str

    @property
    def clean(self) -> bool:
        return not (self.changed or self.missing or self.extra)


def _check_names(files: Mapping[str, str | bytes]) -> None:
    for name in files:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise OutputError(f"refusing to write {name!r}: output files must be plain names inside the output folder")


def _write_file(path: Path, content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_outputs(out_root: str | Path, name: str, files: Mapping[str, str | bytes]) -> Path:
    """Atomically replace `out_root/name/` with exactly `files`; returns that folder."""
    if not name.isidentifier():
        raise OutputError(f"refusing to write build {name!r}: a build name must be an identifier")
    _check_names(files)
    out_root = Path(out_root)
    if out_root.exists() and not out_root.is_dir():
        raise OutputError(f"output path {out_root} exists and is not a folder; pass another -o DIR", str(out_root))
    out_root.mkdir(parents=True, exist_ok=True)
    dest = out_root / name
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise OutputError(f"{dest} exists and is not a plain folder; remove it or pass another -o DIR", str(dest))
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.new-", dir=out_root))
    aside: Path | None = None  # set once the previous build has moved there
    try:
        for file_name in sorted(files):
            _write_file(staging / file_name, files[file_name])
        os.chmod(staging, 0o755)  # mkdtemp's 0o700 would surprise anyone sharing the build
        if dest.exists():
            spare = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=out_root))
            spare.rmdir()  # only the unique name is wanted: rename needs it free
            os.rename(dest, spare)
            aside = spare
        os.rename(staging, dest)
    except BaseException:
        if aside is not None:
            os.rename(aside, dest)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    _fsync_dir(out_root)
    return dest


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the renames are still atomic
    finally:
        os.close(fd)


def compare_outputs(dest: str | Path, files: Mapping[str, str | bytes], *, max_lines: int = 40) -> Drift:
    """Compare `dest/` with a fresh build's files; the diff is short (at most `max_lines` per file)."""
    dest = Path(dest)
    _check_names(files)
    on_disk = {path.name for path in dest.iterdir() if path.is_file()} if dest.is_dir() else set()
    changed, missing, chunks = [], [], []
    for name in sorted(files):
        fresh = files[name]
        fresh_bytes = fresh.encode("utf-8") if isinstance(fresh, str) else fresh
        path = dest / name
        if name not in on_disk:
            missing.append(name)
            chunks.append(f"missing: {path}\n")
            continue
        old_bytes = path.read_bytes()
        if old_bytes == fresh_bytes:
            continue
        changed.append(name)
        old_lines = old_bytes.decode("utf-8", "replace").splitlines(keepends=True)
        new_lines = fresh_bytes.decode("utf-8", "replace").splitlines(keepends=True)
        lines = list(difflib.unified_diff(old_lines, new_lines, f"{path} (on disk)", f"{path} (fresh build)", n=2))
        if len(lines) > max_lines:
            lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more diff lines)\n"]
        chunks.append("".join(line if line.endswith("\n") else line + "\n" for line in lines))
    extra = sorted(on_disk - set(files))
    chunks.extend(f"extra: {dest / name}\n" for name in extra)
    return Drift(tuple(changed), tuple(missing), tuple(extra), "".join(chunks))
