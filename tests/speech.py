"""Real spoken words for tests, synthesised at test time with espeak-ng and sox (Debian packages).

``make test`` installs both where it can (``make sysdeps``); tests that need them skip with
the reason when they are missing, and fail in CI (``CI`` set), where they must be present.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-sc", "en-us+m7")
WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "go")


def require_speech_tools() -> None:
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (make sysdeps installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def say(word: str, voice: str, speed: int, out: Path, rate: int = 16000) -> Path:
    """``word`` spoken by ``voice`` at ``speed`` words/min: mono 16-bit PCM at ``rate``, silence trimmed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spoken = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", word], check=True, capture_output=True
    ).stdout
    subprocess.run(
        ["sox", "-t", "wav", "-", "-b", "16", "-c", "1", "-r", str(rate), str(out),
         "silence", "1", "0.02", "1%", "reverse", "silence", "1", "0.02", "1%", "reverse"],
        input=spoken, check=True, capture_output=True,
    )
    return out


def spoken_word_folder(root: Path, words: tuple[str, ...] = WORDS, voices: tuple[str, ...] = VOICES,
                       speeds: tuple[int, ...] = (140, 190)) -> Path:
    """``root/<word>/<voice>_<speed>.wav``: a class-per-folder data set of 0.2-1.5 s clips;
    the file name's prefix before ``_`` is the speaker."""
    for word in words:
        for v, voice in enumerate(voices):
            for speed in speeds:
                say(word, voice, speed, root / word / f"v{v}_{speed}.wav")
    return root
