"""Make the Kaldi fbank golden file ``frontend_kaldi_golden.pt`` (run once, offline).

torchaudio cannot be installed beside the CPU torch this project tests with, so the reference
values come from its pure-Python ``torchaudio/compliance/kaldi.py`` loaded on its own:

    pip download --no-deps torchaudio==2.8.0 -d /tmp/ta
    cd /tmp/ta && unzip -o torchaudio-2.8.0-*.whl 'torchaudio/compliance/kaldi.py'
    python tests/data/frontend_make_kaldi_golden.py /tmp/ta/torchaudio/compliance/kaldi.py

``kaldi.py`` imports ``torchaudio`` only for ``mfcc``'s DCT, so a stub module stands in for it.
The file holds the int16 input signals (defined by formula below, with seeded noise) and the
reference ``fbank`` outputs for AudioMAE's exact arguments; ``tests/test_transforms_kaldi.py``
compares ``kaldi_fbank`` against them at 1e-3 absolute.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import torch

GOLDEN = Path(__file__).with_name("frontend_kaldi_golden.pt")


def make_signal(sample_rate: int, seconds: float, kind: str, seed: int) -> torch.Tensor:
    """A deterministic test signal as int16 PCM samples."""
    n = int(round(sample_rate * seconds))
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    noise = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if kind == "tones":
        x = 0.3 * torch.sin(2 * math.pi * 440.0 * t) + 0.2 * torch.sin(2 * math.pi * 3000.0 * t + 0.5)
        x = x + 0.02 * noise + 0.05  # a DC offset, removed by the mean subtraction
    elif kind == "chirp":
        f0, f1 = 100.0, 0.45 * sample_rate
        phase = 2 * math.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
        x = 0.5 * torch.sin(phase) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3.0 * t)) + 0.01 * noise
    elif kind == "bursts":
        # loud noise bursts between stretches of digital silence: exercises the log floor
        gate = (torch.sin(2 * math.pi * 2.0 * t) > 0.3).to(torch.float64)
        x = 0.6 * noise.clamp(-3, 3) / 3 * gate
    else:
        raise ValueError(kind)
    return (x.clamp(-1, 1) * 32767).round().to(torch.int16)


CASES = [  # (name, sample_rate, seconds, kind, seed, num_mel_bins)
    ("tones_16k", 16000, 1.0, "tones", 1, 128),
    ("chirp_44k", 44100, 1.5, "chirp", 2, 128),
    ("bursts_16k", 16000, 2.0013, "bursts", 3, 128),
    ("tones_22k_80", 22050, 0.7, "tones", 4, 80),
]


def main(kaldi_path: str) -> None:
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # only mfcc needs it
    spec = importlib.util.spec_from_file_location("reference_kaldi", kaldi_path)
    kaldi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kaldi)
    golden: dict[str, dict[str, object]] = {}
    for name, rate, seconds, kind, seed, mels in CASES:
        pcm = make_signal(rate, seconds, kind, seed)
        wave = (pcm.to(torch.float32) / 32768.0).unsqueeze(0)
        fbank = kaldi.fbank(
            wave - wave.mean(),
            htk_compat=True,
            sample_frequency=rate,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=mels,
            dither=0.0,
            frame_shift=10,
        )
        golden[name] = {"pcm": pcm, "sample_rate": rate, "num_mel_bins": mels, "fbank": fbank.to(torch.float32)}
        print(f"{name}: {tuple(fbank.shape)} min {fbank.min():.3f} max {fbank.max():.3f}")
    torch.save(golden, GOLDEN)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ta/torchaudio/compliance/kaldi.py")
