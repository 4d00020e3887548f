"""Reading audio with the standard library, and a disk cache of decoded, resampled waveforms.

``read_wav_header`` parses the RIFF chunks with ``struct``: uncompressed WAV with 8-, 16-,
24- and 32-bit integer or 32/64-bit float samples, plain or WAVE_FORMAT_EXTENSIBLE (what sox
and libsndfile write for 24-bit and multichannel files). Anything else (compressed WAV,
non-WAV files, truncated data) raises ``AudioFileError`` naming the file and the fix.
FLAC, OGG/Vorbis and MP3 files (by suffix, ``SOUNDFILE_SUFFIXES``) are decoded by libsndfile
through the optional ``soundfile`` package, imported when such a file is first read; without
it they raise ``ModuleNotFoundError`` naming the file and ``pip install soundfile``.

Decoding a 5 s 44.1 kHz clip and resampling it costs milliseconds, which adds up to seconds
per epoch, so decoded waveforms at the target rate are cached on disk: one raw float32 file
per clip, keyed by the source's path, size, mtime and the rate, written
atomically (temporary file + rename) so a killed run never leaves a half-written entry.
By default the cache lives in the user cache directory, one folder per data root
(``default_audio_cache_dir``), so nothing is written into the user's data folder.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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
    is_float: bool = False  # IEEE float samples (format tag 3), else integer PCM
    block_align: int = 0  # bytes per frame (channels x sample width)


WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The 14 bytes after the 2-byte format tag in every KSDATAFORMAT_SUBTYPE_* GUID.
KSDATAFORMAT_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
CONVERT_HINT = "convert it to PCM WAV, e.g. `sox in.ext -b 16 out.wav` or `ffmpeg -i in.ext -c:a pcm_s16le out.wav`"
# One 25 ms analysis frame: the window of the catalog's front ends (Kaldi fbank's and
# log_mel's 400 samples at 16 kHz). A shorter clip holds no frame of real audio.
MIN_CLIP_SECONDS = 0.025
# Sample rates a header may claim; outside them it is damaged (a 1 Hz header would make a
# 32 KB file decode and resample into gigabytes).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768000
# Compressed formats read through ``soundfile`` (libsndfile); every other file is read as WAV.
SOUNDFILE_SUFFIXES = (".flac", ".ogg", ".oga", ".mp3")
AUDIO_SUFFIXES = (".wav", *SOUNDFILE_SUFFIXES)


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
            info = read_wav_header(path, handle)
            check_wav_header(path, info, handle.tell(), size)
            data = (
                handle.read(info.num_frames * info.block_align) if read_samples else b""
            )
    except AudioFileError:
        raise
    except OSError as error:
        if os.path.islink(path):
            raise AudioFileError(
                f"{path}: a symbolic link whose target cannot be read"
                f" ({error.strerror or error}); fix or remove the link"
            ) from None
        raise AudioFileError(
            f"{path}: cannot be read ({error.strerror or error})"
        ) from None
    return info, data


def read_wav_header(path: str | os.PathLike[str], handle: BinaryIO) -> WavInfo:
    """Parse RIFF/WAVE chunks up to the data chunk, leaving ``handle`` at its first sample.

    Format tags: 1 (integer PCM), 3 (IEEE float) and 0xFFFE (WAVE_FORMAT_EXTENSIBLE, what
    sox and libsndfile write for 24-bit and multichannel files) with a PCM or float
    sub-format. Anything else (mu-law, ADPCM, MP3 in WAV) is refused with the fix.
    """
    riff = handle.read(12)
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise AudioFileError(
            f"{path}: not a PCM WAV file the standard library can read (no RIFF/WAVE header); {CONVERT_HINT}"
        )
    fmt: tuple[int, int, int, int, int] | None = None
    while True:
        chunk = handle.read(8)
        if len(chunk) < 8:
            missing = "fmt and data chunks" if fmt is None else "data chunk"
            raise AudioFileError(
                f"{path}: not a PCM WAV file the standard library can read (no {missing}); {CONVERT_HINT}"
            )
        chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(path, handle.read(min(chunk_size, 1024)))
            handle.seek(max(chunk_size - 1024, 0) + (chunk_size & 1), os.SEEK_CUR)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioFileError(
                    f"{path}: not a PCM WAV file the standard library can read (data chunk before fmt); {CONVERT_HINT}"
                )
            tag, channels, rate, width, block_align = fmt
            return WavInfo(
                rate, channels, width, chunk_size // block_align, tag == 3, block_align
            )
        else:  # LIST, fact, PEAK, ...: skipped (chunks pad to even sizes)
            handle.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)


def _parse_fmt(
    path: str | os.PathLike[str], body: bytes
) -> tuple[int, int, int, int, int]:
    """(format tag 1 or 3, channels, rate, bytes per sample, bytes per frame) of a fmt chunk."""
    if len(body) < 16:
        raise AudioFileError(
            f"{path}: not a PCM WAV file the standard library can read (fmt chunk of {len(body)} bytes); {CONVERT_HINT}"
        )
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40 or body[26:40] != KSDATAFORMAT_GUID_TAIL:
            raise AudioFileError(
                f"{path}: WAVE_FORMAT_EXTENSIBLE with an unknown sub-format; {CONVERT_HINT}"
            )
        tag = struct.unpack("<H", body[24:26])[0]
    if tag not in (1, 3):
        raise AudioFileError(
            f"{path}: not a PCM WAV file the standard library can read (format tag {tag}: compressed audio);"
            f" {CONVERT_HINT}"
        )
    # Samples sit in containers of block_align / channels bytes, most significant bits first
    # (24 valid bits in a 32-bit container read as 32-bit samples).
    width = block_align // channels if channels > 0 else 0
    if bits <= 0 or width * channels != block_align or width < (bits + 7) // 8:
        raise AudioFileError(
            f"{path}: invalid header ({channels} channels of {bits} bits in {block_align}-byte frames);"
            " re-export the file"
        )
    if tag == 3 and width not in (4, 8):
        raise AudioFileError(
            f"{path}: unsupported float WAV of {bits} bits; {CONVERT_HINT}"
        )
    return tag, channels, rate, width, block_align


def check_wav_header(
    path: str | os.PathLike[str], info: WavInfo, data_start: int, size: int
) -> None:
    if info.sample_width not in ((4, 8) if info.is_float else (1, 2, 3, 4)):
        raise AudioFileError(
            f"{path}: unsupported sample width of {info.sample_width} bytes; {CONVERT_HINT}"
        )
    if info.channels <= 0:
        raise AudioFileError(
            f"{path}: invalid header ({info.channels} channels); re-export the file"
        )
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioFileError(
            f"{path}: implausible sample rate of {info.sample_rate} Hz in its header"
            f" (audio is {MIN_SAMPLE_RATE // 1000} kHz to {MAX_SAMPLE_RATE // 1000} kHz);"
            " the header is damaged: re-export or re-download the file"
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


def float_samples(data: bytes, sample_width: int) -> torch.Tensor:
    """Little-endian IEEE float bytes (32- or 64-bit) -> float32 samples."""
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if sys.byteorder == "big":  # WAV is little-endian
        raw = raw.view(-1, sample_width).flip(1).reshape(-1)
    return raw.view(torch.float32 if sample_width == 4 else torch.float64).float()


def read_wav(path: str | os.PathLike[str]) -> tuple[torch.Tensor, int]:
    """Decode a PCM WAV file to a mono float32 waveform ``[N]`` (channels averaged) and its rate."""
    info, data = open_wav(path, read_samples=True)
    return decode_wav(path, info, data)


def probe_wav_stream(name: str, handle: BinaryIO, size: int) -> WavInfo:
    """The checked header of a WAV of ``size`` bytes read from ``handle`` (a tar member, a
    buffer) from its current position; ``name`` names it in errors, as a path would."""
    if size == 0:
        raise AudioFileError(f"{name}: the file is empty")
    start = handle.tell()
    info = read_wav_header(name, handle)
    check_wav_header(name, info, handle.tell() - start, size)
    return info


def read_wav_bytes(name: str, data: bytes) -> tuple[torch.Tensor, int]:
    """Decode a PCM WAV held in memory (e.g. read from a tar shard) like ``read_wav``."""
    handle = io.BytesIO(data)
    info = probe_wav_stream(name, handle, len(data))
    return decode_wav(name, info, handle.read(info.num_frames * info.block_align))


def decode_wav(
    path: str | os.PathLike[str], info: WavInfo, data: bytes
) -> tuple[torch.Tensor, int]:
    """The sample bytes of a checked WAV header as a mono float32 waveform and its rate."""
    expected = info.num_frames * info.channels * info.sample_width
    if len(data) != expected:
        raise AudioFileError(
            f"{path}: truncated: expected {expected} bytes of samples, read {len(data)}"
        )
    samples = (
        float_samples(data, info.sample_width)
        if info.is_float
        else pcm_to_float(data, info.sample_width)
    )
    if info.channels > 1:
        samples = samples.view(-1, info.channels).mean(dim=1)
    return samples, info.sample_rate


def needs_soundfile(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a FLAC, OGG or MP3 file (by suffix), read through ``soundfile``."""
    return os.path.splitext(os.fspath(path))[1].lower() in SOUNDFILE_SUFFIXES


def import_soundfile(path: str | os.PathLike[str]) -> Any:
    """The ``soundfile`` module, or one clear error naming ``path`` and the package to install."""
    try:
        import soundfile
    except (ImportError, OSError):  # OSError: installed, but its libsndfile cannot load
        suffix = os.path.splitext(os.fspath(path))[1].lower()
        raise ModuleNotFoundError(
            f"{path}: reading {suffix[1:].upper()} files needs the soundfile package:"
            " pip install soundfile (or convert the files to PCM WAV)"
        ) from None
    return soundfile


def _soundfile_error(path: str | os.PathLike[str], error: Exception) -> AudioFileError:
    reason = " ".join(str(getattr(error, "error_string", "") or error).split())
    return AudioFileError(
        f"{path}: cannot be decoded by libsndfile ({reason}); re-export or re-download the file"
    )


def probe_soundfile(
    path: str | os.PathLike[str], source: BinaryIO | None = None
) -> WavInfo:
    """Rate, channels and length of a FLAC/OGG/MP3 file from its header, through ``soundfile``.

    ``source``: a seekable file object to read instead (a tar member), ``path`` naming it.
    """
    soundfile = import_soundfile(path)
    try:
        if source is None and os.path.getsize(path) == 0:
            raise AudioFileError(f"{path}: the file is empty")
        with soundfile.SoundFile(
            os.fspath(path) if source is None else source
        ) as handle:
            rate, channels, frames = handle.samplerate, handle.channels, handle.frames
            # The last frame must decode: a cut-off FLAC fails here, a cut-off MP3 reads
            # nothing (a cut-off OGG is just shorter). One seek, not a decode of the file.
            if frames > 0:
                try:
                    handle.seek(frames - 1)
                    last = len(handle.read(1))
                except RuntimeError:
                    last = 0
                if last != 1:
                    raise AudioFileError(
                        f"{path}: truncated: the header announces {frames} frames but the last"
                        " of them cannot be decoded; re-download or re-export the file"
                    )
    except AudioFileError:
        raise
    except OSError as error:
        raise AudioFileError(
            f"{path}: cannot be read ({error.strerror or error})"
        ) from None
    except RuntimeError as error:  # soundfile.LibsndfileError
        raise _soundfile_error(path, error) from None
    info = WavInfo(rate, channels, 4, frames, True, 4 * channels)
    if info.channels <= 0 or not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioFileError(
            f"{path}: invalid header ({info.channels} channels at {info.sample_rate} Hz);"
            " re-export or re-download the file"
        )
    if info.num_frames <= 0:
        raise AudioFileError(
            f"{path}: holds no audio (0 frames); re-export the file or remove it"
        )
    return info


def read_soundfile(
    path: str | os.PathLike[str], source: BinaryIO | None = None
) -> tuple[torch.Tensor, int]:
    """Decode a FLAC/OGG/MP3 file (or ``source``, a file object ``path`` names) to a mono
    float32 waveform ``[N]`` and its rate."""
    soundfile = import_soundfile(path)
    try:
        data, rate = soundfile.read(
            os.fspath(path) if source is None else source,
            dtype="float32",
            always_2d=True,
        )
    except OSError as error:
        raise AudioFileError(
            f"{path}: cannot be read ({error.strerror or error})"
        ) from None
    except RuntimeError as error:  # soundfile.LibsndfileError
        raise _soundfile_error(path, error) from None
    if data.shape[0] == 0:
        raise AudioFileError(
            f"{path}: holds no audio (0 frames); re-export the file or remove it"
        )
    return torch.from_numpy(data).mean(dim=1), int(rate)


def probe_audio(path: str | os.PathLike[str]) -> WavInfo:
    """The checked header of an audio file: FLAC/OGG/MP3 through ``soundfile``, else WAV."""
    return probe_soundfile(path) if needs_soundfile(path) else probe_wav(path)


def read_audio(path: str | os.PathLike[str]) -> tuple[torch.Tensor, int]:
    """Mono float32 waveform and rate: FLAC/OGG/MP3 through ``soundfile``, else PCM WAV."""
    return read_soundfile(path) if needs_soundfile(path) else read_wav(path)


def user_cache_dir() -> Path:
    """sigmae-gen's folder in the user cache directory.

    ``$SIGMAE_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/sigmae-gen`` (an absolute
    ``XDG_CACHE_HOME``, as the XDG spec says), else ``~/.cache/sigmae-gen``.
    """
    own = os.environ.get("SIGMAE_CACHE_DIR", "")
    if own:
        return Path(own)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sigmae-gen"


def default_audio_cache_dir(root: str | os.PathLike[str]) -> Path:
    """Where decoded clips of the data set at ``root`` are cached unless ``cache_dir`` says:
    ``user_cache_dir()/audio/<hash of the resolved root>``, never inside the data folder.
    """
    key = hashlib.sha256(os.fsencode(os.path.realpath(root))).hexdigest()[:16]
    return user_cache_dir() / "audio" / key


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
    samples, rate = read_audio(path)
    if rate != sample_rate:
        samples = resample(samples, rate, sample_rate)
    if cache is not None:
        try:
            cache.put(path, sample_rate, samples)
        except OSError:
            pass  # a read-only cache folder only costs speed
    return samples


__all__ = [
    "AUDIO_SUFFIXES",
    "AudioFileError",
    "DataFormatError",
    "WavInfo",
    "WaveformCache",
    "check_duration",
    "default_audio_cache_dir",
    "tensor_bytes",
    "load_audio",
    "pcm_to_float",
    "decode_wav",
    "needs_soundfile",
    "probe_audio",
    "probe_soundfile",
    "probe_wav",
    "probe_wav_stream",
    "read_audio",
    "read_soundfile",
    "read_wav",
    "read_wav_bytes",
    "user_cache_dir",
]
