"""Reading audio with the standard library, and a disk cache of decoded, resampled waveforms.

``wave`` reads uncompressed PCM WAV (8-, 16-, 24- and 32-bit integer samples); anything else
(compressed or float WAV, non-WAV files, truncated data) raises ``AudioFileError`` naming the
file and the fix. Decoding a 5 s 44.1 kHz clip and resampling it costs milliseconds, which
adds up to seconds per epoch, so decoded waveforms at the target rate are cached on disk:
one raw float32 file per clip, keyed by the source's path, size, mtime and the rate, written
atomically (temporary file + rename) so a killed run never leaves a half-written entry.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import torch

from components.transforms.resample import resample


class AudioFileError(ValueError):
    """An audio file that cannot be read; the message names the file and what to do."""


class DataFormatError(ValueError):
    """A metadata file (CSV, pickle, HDF5) whose layout is not the expected one."""


@dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    sample_width: int  # bytes per sample
    num_frames: int


CONVERT_HINT = "convert it to PCM WAV, e.g. `sox in.ext -b 16 out.wav` or `ffmpeg -i in.ext -c:a pcm_s16le out.wav`"
# One 25 ms analysis frame: the window of the catalog's front ends (Kaldi fbank's and
# log_mel's 400 samples at 16 kHz). A shorter clip holds no frame of real audio.
MIN_CLIP_SECONDS = 0.025


def probe_wav(path: str | os.PathLike[str]) -> WavInfo:
    """Read a WAV header and check that the data it announces is really in the file (cheap)."""
    return open_wav(path, read_samples=False)[0]


def open_wav(path: str | os.PathLike[str], read_samples: bool) -> tuple[WavInfo, bytes]:
    """The checked header and, with ``read_samples``, the sample bytes: one pass over the file."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise AudioFileError(f"{path}: the file is empty")
        with open(path, "rb") as handle:
            with wave.open(handle, "rb") as reader:
                info = WavInfo(
                    reader.getframerate(),
                    reader.getnchannels(),
                    reader.getsampwidth(),
                    reader.getnframes(),
                )
                # wave stops right after the data chunk's header
                check_wav_header(path, info, handle.tell(), size)
                data = reader.readframes(info.num_frames) if read_samples else b""
    except AudioFileError:
        raise
    except (wave.Error, EOFError) as error:
        raise AudioFileError(
            f"{path}: not a PCM WAV file the standard library can read ({error}); {CONVERT_HINT}"
        ) from None
    except OSError as error:
        raise AudioFileError(
            f"{path}: cannot be read ({error.strerror or error})"
        ) from None
    return info, data


def check_wav_header(
    path: str | os.PathLike[str], info: WavInfo, data_start: int, size: int
) -> None:
    if info.sample_width not in (1, 2, 3, 4):
        raise AudioFileError(
            f"{path}: unsupported sample width of {info.sample_width} bytes; {CONVERT_HINT}"
        )
    if info.sample_rate <= 0 or info.channels <= 0:
        raise AudioFileError(
            f"{path}: invalid header (rate {info.sample_rate} Hz, {info.channels} channels)"
        )
    if info.num_frames == 0:
        raise AudioFileError(
            f"{path}: holds no audio (its header announces 0 frames); re-export the file or remove it"
        )
    missing = data_start + info.num_frames * info.channels * info.sample_width - size
    if missing > 0:
        raise AudioFileError(
            f"{path}: truncated: the header announces {info.num_frames} frames but {missing} bytes of them are missing;"
            " re-download or re-export the file"
        )


def check_duration(
    path: str | os.PathLike[str], info: WavInfo, min_seconds: float = MIN_CLIP_SECONDS
) -> None:
    """A clip shorter than one analysis frame (``min_seconds``) is a bad file, not a sample."""
    if info.num_frames < min_seconds * info.sample_rate:
        raise AudioFileError(
            f"{path}: too short: {info.num_frames} frames at {info.sample_rate} Hz"
            f" ({1000 * info.num_frames / info.sample_rate:.1f} ms) is less than one"
            f" {1000 * min_seconds:g} ms analysis frame; remove it or re-export it longer"
        )


def pcm_to_float(data: bytes, sample_width: int) -> torch.Tensor:
    """Little-endian PCM bytes -> float32 samples in [-1, 1)."""
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if sample_width == 1:  # 8-bit WAV is unsigned
        return (raw.to(torch.float32) - 128.0) / 128.0
    if sample_width == 3:
        b = raw.view(-1, 3).to(torch.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = torch.where(value >= 1 << 23, value - (1 << 24), value)
        return value.to(torch.float32) / float(1 << 23)
    if sys.byteorder == "big":  # WAV is little-endian
        raw = raw.view(-1, sample_width).flip(1).reshape(-1)
    samples = raw.view(torch.int16 if sample_width == 2 else torch.int32)
    return samples.to(torch.float32) / float(1 << (8 * sample_width - 1))


def read_wav(path: str | os.PathLike[str]) -> tuple[torch.Tensor, int]:
    """Decode a PCM WAV file to a mono float32 waveform ``[N]`` (channels averaged) and its rate."""
    info, data = open_wav(path, read_samples=True)
    expected = info.num_frames * info.channels * info.sample_width
    if len(data) != expected:
        raise AudioFileError(
            f"{path}: truncated: expected {expected} bytes of samples, read {len(data)}"
        )
    samples = pcm_to_float(data, info.sample_width)
    if info.channels > 1:
        samples = samples.view(-1, info.channels).mean(dim=1)
    return samples, info.sample_rate


class WaveformCache:
    """Decoded waveforms at a given rate, one raw float32 file per source file."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, source: str | os.PathLike[str], sample_rate: int) -> Path:
        stat = os.stat(source)
        ident = f"{os.path.abspath(source)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{sample_rate}"
        return self.directory / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.f32"

    def get(
        self, source: str | os.PathLike[str], sample_rate: int
    ) -> torch.Tensor | None:
        try:
            data = self.path_for(source, sample_rate).read_bytes()
        except OSError:
            return None
        if len(data) % 4:
            return None  # not one of ours; it will be rewritten
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        if sys.byteorder == "big":
            raw = raw.view(-1, 4).flip(1).reshape(-1)
        return raw.view(torch.float32)

    def put(
        self, source: str | os.PathLike[str], sample_rate: int, waveform: torch.Tensor
    ) -> None:
        target = self.path_for(source, sample_rate)
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=self.directory, prefix=".tmp-", suffix=".f32"
        )
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(tensor_bytes(waveform))
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def tensor_bytes(samples: torch.Tensor) -> bytes:
    """The raw little-endian float32 bytes of ``samples`` (a tensor has no buffer protocol).

    ``ctypes.string_at`` copies the contiguous block in one call; iterating a storage from
    Python would cost a second per clip.
    """
    samples = samples.detach().to("cpu", torch.float32).contiguous()
    if sys.byteorder == "big":
        samples = (
            samples.view(torch.uint8)
            .view(-1, 4)
            .flip(1)
            .contiguous()
            .view(torch.float32)
        )
    return ctypes.string_at(samples.data_ptr(), samples.numel() * 4)


def load_audio(
    path: str | os.PathLike[str], sample_rate: int, cache: WaveformCache | None = None
) -> torch.Tensor:
    """Mono float32 waveform of ``path`` at ``sample_rate``, through ``cache`` when given."""
    if cache is not None:
        cached = cache.get(path, sample_rate)
        if cached is not None:
            return cached
    samples, rate = read_wav(path)
    if rate != sample_rate:
        samples = resample(samples, rate, sample_rate)
    if cache is not None:
        try:
            cache.put(path, sample_rate, samples)
        except OSError:
            pass  # a read-only cache folder only costs speed
    return samples


def fit_length(waveform: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Crop to the first ``num_samples`` or zero-pad at the end."""
    if waveform.shape[-1] >= num_samples:
        return waveform[..., :num_samples]
    return torch.nn.functional.pad(waveform, (0, num_samples - waveform.shape[-1]))


__all__ = [
    "AudioFileError",
    "DataFormatError",
    "WavInfo",
    "WaveformCache",
    "check_duration",
    "tensor_bytes",
    "fit_length",
    "load_audio",
    "pcm_to_float",
    "probe_wav",
    "read_wav",
]
