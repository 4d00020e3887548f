"""Synthetic data sets: deterministic, easy-to-separate classes for ``--smoke`` runs and tests.

Each item is generated from ``(seed, index)`` alone, so any subset, order or worker split gives
the same signals, and nothing is stored. Item ``i`` has label ``i % num_classes`` and fold
``(i // num_classes) % num_folds + 1``: every fold holds every class once ``num_items`` reaches
``num_classes * num_folds``.
"""

from __future__ import annotations

import math

import torch

from components.data.base import Record, SignalDataset, filter_folds
from components.registry import data_registry

AUDIO_FAMILIES = ("tone", "chirp", "noise_band", "am_tone")
IQ_MODULATIONS = ("BPSK", "QPSK", "8PSK", "16QAM", "4ASK", "OOK", "64QAM", "16PSK")


def item_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


def synthetic_records(
    num_items: int, num_classes: int, num_folds: int, class_names: list[str]
) -> list[Record]:
    return [
        Record(
            f"index:{i}",
            i % num_classes,
            class_names[i % num_classes],
            (i // num_classes) % num_folds + 1,
        )
        for i in range(num_items)
    ]


def check_synthetic_sizes(name: str, **sizes: int) -> None:
    """Reject the first size below 1, naming it (a zero rate or length gives NaN or empty signals)."""
    for size_name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name}: {size_name} must be >= 1, got {value}")


@data_registry.register("synthetic_audio", version="1.0")
class SyntheticAudio(SignalDataset):
    """K classes of synthetic sounds: tones, chirps, noise bands and AM tones at class-specific pitches.

    Class ``k`` is family ``k % 4`` centred on a pitch spaced logarithmically between 200 Hz and
    0.35 x the sample rate; items vary in phase, exact pitch (+-3 %), level and background noise.

    Args:
        num_classes: Number of classes (sound families cycle every 4 classes, pitches
            differ per class).
        num_items: Number of clips in the data set, dealt evenly over classes and folds.
        num_samples: Length of every clip in samples (16000 = 1 s at 16 kHz).
        sample_rate: Sample rate in Hz of the generated clips; match it to the
            transform's.
        num_folds: Number of folds the clips are dealt into.
        seed: Seed of the generator: the same seed gives the same clips.
        folds: Folds to keep; None keeps every fold.
        noise_level: Standard deviation of the white Gaussian noise added to every clip
            (0 = clean); raise it to make the task harder.
    """

    signal_kind = "audio"

    def __init__(
        self,
        num_classes: int = 4,
        num_items: int = 64,
        num_samples: int = 16000,
        sample_rate: int = 16000,
        num_folds: int = 5,
        seed: int = 0,
        folds: list[int] | None = None,
        noise_level: float = 0.05,
    ) -> None:
        super().__init__()
        check_synthetic_sizes(
            "synthetic_audio",
            num_classes=num_classes,
            num_items=num_items,
            num_folds=num_folds,
            num_samples=num_samples,
            sample_rate=sample_rate,
        )
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.seed = seed
        self.noise_level = noise_level
        top = 0.35 * sample_rate
        self.centres = [
            200.0 * (top / 200.0) ** (k / max(1, num_classes - 1))
            for k in range(num_classes)
        ]
        self.class_names = [
            f"{AUDIO_FAMILIES[k % 4]}_{round(self.centres[k])}hz"
            for k in range(num_classes)
        ]
        self.records = filter_folds(
            synthetic_records(num_items, num_classes, num_folds, self.class_names),
            folds,
            "synthetic_audio",
        )

    def load(self, index: int) -> torch.Tensor:
        record = self.records[index]
        g = item_generator(self.seed, int(record.key.split(":")[1]))
        t = torch.arange(self.num_samples, dtype=torch.float64) / self.sample_rate
        centre = self.centres[record.label] * (
            1.0 + 0.03 * (2 * torch.rand((), generator=g, dtype=torch.float64) - 1)
        )
        phase = 2 * math.pi * torch.rand((), generator=g, dtype=torch.float64)
        family = AUDIO_FAMILIES[record.label % 4]
        if family == "tone":
            signal = torch.sin(2 * math.pi * centre * t + phase)
        elif (
            family == "chirp"
        ):  # sweeps one octave up from half the centre pitch, repeating
            period = 0.25
            local = torch.remainder(t, period)
            start = centre / 2
            signal = torch.sin(
                2 * math.pi * (start * local + start * local.square() / (2 * period))
                + phase
            )
        elif family == "noise_band":
            noise = torch.randn(self.num_samples, generator=g, dtype=torch.float64)
            spectrum = torch.fft.rfft(noise)
            freqs = torch.fft.rfftfreq(self.num_samples, 1.0 / self.sample_rate).to(
                torch.float64
            )
            spectrum = spectrum * ((freqs > centre / 1.25) & (freqs < centre * 1.25))
            signal = torch.fft.irfft(spectrum, n=self.num_samples)
            signal = signal / signal.abs().max().clamp(min=1e-8)
        else:  # a tone amplitude-modulated at 4-8 Hz
            rate = 4.0 + 4.0 * torch.rand((), generator=g, dtype=torch.float64)
            signal = (0.5 + 0.5 * torch.sin(2 * math.pi * rate * t)) * torch.sin(
                2 * math.pi * centre * t + phase
            )
        level = 0.3 + 0.5 * torch.rand((), generator=g, dtype=torch.float64)
        noise = self.noise_level * torch.randn(
            self.num_samples, generator=g, dtype=torch.float64
        )
        return (level * signal + noise).to(torch.float32)


def constellation(modulation: str) -> torch.Tensor:
    """Unit-average-power complex symbol alphabet of ``modulation``."""
    if modulation.endswith("PSK"):
        order = {"BPSK": 2, "QPSK": 4}.get(modulation) or int(modulation[:-3])
        angles = 2 * math.pi * torch.arange(order, dtype=torch.float64) / order
        points = torch.polar(torch.ones(order, dtype=torch.float64), angles)
    elif modulation.endswith("QAM"):
        side = int(math.isqrt(int(modulation[:-3])))
        levels = torch.arange(side, dtype=torch.float64) * 2 - (side - 1)
        points = torch.complex(levels.repeat_interleave(side), levels.repeat(side))
    elif modulation == "4ASK":
        points = torch.complex(
            torch.tensor([-3.0, -1.0, 1.0, 3.0], dtype=torch.float64),
            torch.zeros(4, dtype=torch.float64),
        )
    elif modulation == "OOK":
        points = torch.complex(
            torch.tensor([0.0, 1.0], dtype=torch.float64),
            torch.zeros(2, dtype=torch.float64),
        )
    else:
        raise ValueError(
            f"unknown modulation {modulation!r}; known: {', '.join(IQ_MODULATIONS)}"
        )
    return points / points.abs().square().mean().sqrt()


def raised_cosine(
    samples_per_symbol: int, rolloff: float, span_symbols: int = 8
) -> torch.Tensor:
    """Raised-cosine pulse sampled at ``samples_per_symbol``, ``span_symbols`` long, peak 1."""
    t = torch.arange(
        -span_symbols * samples_per_symbol // 2,
        span_symbols * samples_per_symbol // 2 + 1,
        dtype=torch.float64,
    )
    t = t / samples_per_symbol
    denominator = 1.0 - (2.0 * rolloff * t).square()
    singular = denominator.abs() < 1e-8
    pulse = (
        torch.sinc(t)
        * torch.cos(math.pi * rolloff * t)
        / torch.where(singular, torch.ones_like(t), denominator)
    )
    if rolloff > 0:
        pulse = torch.where(
            singular,
            torch.full_like(
                t,
                math.pi
                / 4
                * math.sin(math.pi / (2 * rolloff))
                / (math.pi / (2 * rolloff)),
            ),
            pulse,
        )
    return pulse


@data_registry.register("synthetic_iq", version="1.0")
class SyntheticIQ(SignalDataset):
    """K classes of digitally modulated IQ frames ``[2, num_samples]`` with AWGN at ``snr_db``.

    Class ``k`` uses modulation ``IQ_MODULATIONS[k % 8]`` with raised-cosine pulses. With
    ``class_offsets=True`` (default) each class also gets its own carrier offset, which makes
    classes separable from a magnitude spectrogram alone (quick smoke/accuracy tests); set it
    False for the realistic task where only the constellation differs.

    Args:
        num_classes: Number of classes; class k uses the (k mod 8)-th modulation.
        num_items: Number of IQ frames in the data set, dealt evenly over classes and
            folds.
        num_samples: Samples per frame (128 like RML2016, 1024 like RML2018).
        num_folds: Number of folds the frames are dealt into.
        seed: Seed of the generator: the same seed gives the same frames.
        folds: Folds to keep; None keeps every fold.
        snr_db: Signal-to-noise ratio of the added white Gaussian noise, in dB; lower it
            to make the task harder.
        samples_per_symbol: Oversampling of the raised-cosine pulses (samples per
            symbol).
        rolloff: Roll-off factor (0-1) of the raised-cosine pulse shaping.
        class_offsets: Give each class its own carrier offset, which makes classes
            separable from a magnitude spectrogram alone; False leaves only the
            constellation to tell them apart.
    """

    signal_kind = "iq"

    def __init__(
        self,
        num_classes: int = 4,
        num_items: int = 64,
        num_samples: int = 128,
        num_folds: int = 5,
        seed: int = 0,
        folds: list[int] | None = None,
        snr_db: float = 10.0,
        samples_per_symbol: int = 8,
        rolloff: float = 0.35,
        class_offsets: bool = True,
    ) -> None:
        super().__init__()
        check_synthetic_sizes(
            "synthetic_iq",
            num_classes=num_classes,
            num_items=num_items,
            num_folds=num_folds,
            num_samples=num_samples,
        )
        if samples_per_symbol < 1 or not 0.0 <= rolloff <= 1.0:
            raise ValueError(
                f"synthetic_iq: need samples_per_symbol >= 1 and 0 <= rolloff <= 1, got {samples_per_symbol}, {rolloff}"
            )
        self.num_samples = num_samples
        self.seed = seed
        self.snr_db = snr_db
        self.samples_per_symbol = samples_per_symbol
        self.pulse = raised_cosine(samples_per_symbol, rolloff)
        self.modulations = [
            IQ_MODULATIONS[k % len(IQ_MODULATIONS)] for k in range(num_classes)
        ]
        # offsets spread over +-0.3 cycles/sample, away from each other by at least a symbol bandwidth
        spread = 0.6 / max(1, num_classes - 1)
        self.offsets = [
            (-0.3 + k * spread) if class_offsets and num_classes > 1 else 0.0
            for k in range(num_classes)
        ]
        names = [
            f"{mod}" if not class_offsets else f"{mod}@{offset:+.2f}"
            for mod, offset in zip(self.modulations, self.offsets)
        ]
        self.class_names = (
            names
            if len(set(names)) == len(names)
            else [f"{name}#{k}" for k, name in enumerate(names)]
        )
        self.records = filter_folds(
            synthetic_records(num_items, num_classes, num_folds, self.class_names),
            folds,
            "synthetic_iq",
        )

    def load(self, index: int) -> torch.Tensor:
        record = self.records[index]
        g = item_generator(self.seed, int(record.key.split(":")[1]))
        points = constellation(self.modulations[record.label])
        sps = self.samples_per_symbol
        span = self.pulse.shape[0]
        num_symbols = math.ceil((self.num_samples + span) / sps) + 1
        symbols = points[torch.randint(0, points.shape[0], (num_symbols,), generator=g)]
        upsampled = torch.zeros(num_symbols * sps, dtype=torch.complex128)
        upsampled[::sps] = symbols
        kernel = self.pulse.flip(0).view(1, 1, -1)
        shaped = torch.complex(
            torch.nn.functional.conv1d(upsampled.real.view(1, 1, -1), kernel).view(-1),
            torch.nn.functional.conv1d(upsampled.imag.view(1, 1, -1), kernel).view(-1),
        )
        start = int(torch.randint(0, sps, (), generator=g))  # random timing phase
        frame = shaped[start : start + self.num_samples]
        n = torch.arange(self.num_samples, dtype=torch.float64)
        phase = 2 * math.pi * torch.rand((), generator=g, dtype=torch.float64)
        frame = frame * torch.polar(
            torch.ones_like(n), 2 * math.pi * self.offsets[record.label] * n + phase
        )
        frame = frame / frame.abs().square().mean().sqrt().clamp(min=1e-12)
        noise_std = math.sqrt(10 ** (-self.snr_db / 10) / 2)
        noise = torch.complex(
            torch.randn(self.num_samples, generator=g, dtype=torch.float64),
            torch.randn(self.num_samples, generator=g, dtype=torch.float64),
        )
        frame = frame + noise_std * noise
        return torch.stack([frame.real, frame.imag]).to(torch.float32)


__all__ = [
    "IQ_MODULATIONS",
    "SyntheticAudio",
    "SyntheticIQ",
    "constellation",
    "raised_cosine",
]
