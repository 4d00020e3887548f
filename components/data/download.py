"""Fetching a public data set: a streamed download with a progress line, a safe zip extract.

Plumbing under the data sets that take ``--download`` (``esc50``): an emitted script keeps
it in its support section.
"""

from __future__ import annotations

import sys
import urllib.request
import zipfile
from pathlib import Path

from components.data.audio_io import DataFormatError


def download_with_progress(url: str, target: Path, label: str) -> None:
    """Stream ``url`` to ``target``, printing a progress line to stderr."""
    with urllib.request.urlopen(url) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        last_shown = -1
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            shown = done * 100 // total if total else done >> 20
            if shown != last_shown:
                last_shown = shown
                size = (
                    f"{done / 1e6:.1f}/{total / 1e6:.1f} MB ({shown}%)"
                    if total
                    else f"{done / 1e6:.1f} MB"
                )
                print(f"\r{label}: {size}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def safe_extract(archive: Path, destination: Path) -> None:
    """Extract a zip, refusing members that would land outside ``destination``."""
    with zipfile.ZipFile(archive) as zipped:
        base = destination.resolve()
        for member in zipped.namelist():
            target = (destination / member).resolve()
            if base != target and base not in target.parents:
                raise DataFormatError(
                    f"{archive}: refusing to extract {member!r} outside {destination}"
                )
        zipped.extractall(destination)
