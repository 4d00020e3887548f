"""Contract checks every registered transform (``SignalTransform``) must pass, and its fixtures.

Each ``check_<property>(factory)`` takes ``factory(**overrides) -> transform`` building a small
instance and draws batch sizes, lengths and (for audio) sample rates with hypothesis, settings
from the active profile. The toolkit's tests apply every check to every registered transform;
the emitted test suite applies the same checks, inlined, to the script's transform class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts import applies_to, factory_accepts
from components.registry import fixture_registry
from components.transforms.base import SignalTransform

TransformFactory = Callable[..., SignalTransform]
AUDIO_RATES = (8000, 16000, 22050, 44100)

__all__ = [
    "check_batch_equals_items",
    "check_cpu_and_gpu_agree",
    "check_declares_its_input",
    "check_eval_is_deterministic",
    "check_finite_on_extreme_inputs",
    "check_output_shape_and_dtype",
    "check_padded_batch_equals_items",
    "check_rejects_wrong_layout",
    "check_train_mode_keeps_shape",
    "check_windows_hold_audio",
]


def build_transform(factory: TransformFactory, rate: int | None) -> SignalTransform:
    transform = factory(sample_rate=rate) if rate is not None else factory()
    return transform.eval()


def transform_inputs(
    factory: TransformFactory,
) -> st.SearchStrategy[tuple[int | None, int, int, int]]:
    """Draws ``(rate, batch, length, seed)``: lengths from one frame up to a quarter second (audio)."""
    probe = factory()
    if probe.input_kind == "audio" and factory_accepts(factory, "sample_rate"):
        rates: st.SearchStrategy[int | None] = st.sampled_from(AUDIO_RATES)
    else:
        rates = st.just(None)

    def with_length(
        rate: int | None,
    ) -> st.SearchStrategy[tuple[int | None, int, int, int]]:
        transform = build_transform(factory, rate)
        shortest = max(transform.min_num_samples, 16)
        longest = shortest + (rate // 4 if rate else 1024)
        return st.tuples(
            st.just(rate),
            st.integers(1, 3),
            st.integers(shortest, longest),
            st.integers(0, 2**16),
        )

    return rates.flatmap(with_length)


def make_signal_batch(
    transform: SignalTransform, batch: int, length: int, seed: int
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, length) if transform.input_kind == "audio" else (batch, 2, length)
    return 0.3 * torch.randn(shape, generator=generator)


def check_declares_its_input(factory: TransformFactory) -> None:
    """``input_kind`` is audio or iq; audio transforms carry a positive ``sample_rate``."""
    transform = factory()
    assert isinstance(transform, SignalTransform) and isinstance(
        transform, torch.nn.Module
    )
    assert transform.input_kind in ("audio", "iq"), transform.input_kind
    if transform.input_kind == "audio":
        assert (
            isinstance(transform.sample_rate, int) and transform.sample_rate > 0
        ), transform.sample_rate


def check_output_shape_and_dtype(factory: TransformFactory) -> None:
    """Output is float32 ``[B, C, T, F]`` and equals ``output_shape(N)`` for drawn B, N and rates."""

    @settings(deadline=None)
    @given(case=transform_inputs(factory))
    def run(case: tuple[int | None, int, int, int]) -> None:
        rate, batch, length, seed = case
        transform = build_transform(factory, rate)
        out = transform(make_signal_batch(transform, batch, length, seed))
        assert out.dim() == 4 and out.dtype == torch.float32, (out.shape, out.dtype)
        assert tuple(out.shape) == (batch, *transform.output_shape(length)), (
            tuple(out.shape),
            transform.output_shape(length),
        )

    run()


def check_finite_on_extreme_inputs(factory: TransformFactory) -> None:
    """Silence, full-scale square waves, tiny values and noise all give finite features."""

    @settings(deadline=None)
    @given(
        case=transform_inputs(factory),
        kind=st.sampled_from(["silence", "full_scale", "tiny", "noise"]),
    )
    def run(case: tuple[int | None, int, int, int], kind: str) -> None:
        rate, batch, length, seed = case
        transform = build_transform(factory, rate)
        x = make_signal_batch(transform, batch, length, seed)
        if kind == "silence":
            x = torch.zeros_like(x)
        elif kind == "full_scale":
            x = torch.sign(x) + (x == 0).float()
        elif kind == "tiny":
            x = x * 1e-9
        # train(False) then train(True): a tuple (transform.eval(), transform.train()) would be
        # the same module twice, already in training mode
        for training in (False, True):
            out = transform.train(training)(x)
            assert torch.isfinite(
                out
            ).all(), f"non-finite output for {kind} input in {'train' if training else 'eval'} mode"

    run()


def check_batch_equals_items(factory: TransformFactory) -> None:
    """In ``eval()``, a batch's features equal its items' features computed one by one."""

    @settings(deadline=None)
    @given(case=transform_inputs(factory))
    def run(case: tuple[int | None, int, int, int]) -> None:
        rate, batch, length, seed = case
        transform = build_transform(factory, rate)
        x = make_signal_batch(transform, batch + 1, length, seed)
        together = transform(x)
        alone = torch.cat([transform(x[i : i + 1]) for i in range(x.shape[0])])
        torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)

    run()


def padded_batch(
    transform: SignalTransform, lengths: list[int], seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Clips of ``lengths`` samples zero-padded to the longest (as the collate does), their
    lengths, and the clips themselves."""
    clips = [
        make_signal_batch(transform, 1, length, seed + i)[0]
        for i, length in enumerate(lengths)
    ]
    longest = max(lengths)
    batch = torch.stack(
        [torch.nn.functional.pad(clip, (0, longest - clip.shape[-1])) for clip in clips]
    )
    return batch, torch.tensor(lengths), clips


def unequal_lengths(
    factory: TransformFactory,
) -> st.SearchStrategy[tuple[int | None, list[int], int]]:
    """Draws ``(rate, lengths, seed)``: two to three clips of unequal lengths."""

    def with_lengths(
        case: tuple[int | None, int, int, int],
    ) -> st.SearchStrategy[tuple[int | None, list[int], int]]:
        rate, _, length, seed = case
        return st.tuples(
            st.just(rate),
            st.lists(st.integers(length, 4 * length), min_size=2, max_size=3),
            st.just(seed),
        )

    return transform_inputs(factory).flatmap(with_lengths)


@applies_to("kaldi_fbank", "log_mel")
def check_padded_batch_equals_items(factory: TransformFactory) -> None:
    """In ``eval()``, clips of unequal length padded into one batch, with their ``lengths``,
    give each clip's features computed alone: the padding never reaches the model."""

    @settings(deadline=None)
    @given(case=unequal_lengths(factory))
    def run(case: tuple[int | None, list[int], int]) -> None:
        rate, lengths, seed = case
        transform = build_transform(factory, rate)
        batch, lengths_tensor, clips = padded_batch(transform, lengths, seed)
        together = transform(batch, lengths_tensor)
        alone = torch.cat([transform(clip[None]) for clip in clips])
        torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)

    run()


def check_windows_hold_audio(factory: TransformFactory) -> None:
    """``windows()`` gives every clip at least one window, in clip order, and none of a noise
    clip's windows is pure padding (each varies)."""

    @settings(deadline=None)
    @given(case=unequal_lengths(factory))
    def run(case: tuple[int | None, list[int], int]) -> None:
        rate, lengths, seed = case
        transform = build_transform(factory, rate)
        if transform.input_kind == "iq":
            lengths = [max(lengths)] * len(lengths)  # IQ frames share one length
        batch, lengths_tensor, _ = padded_batch(transform, lengths, seed)
        windows, owner = transform.windows(batch, lengths_tensor)
        assert windows.shape[0] == owner.shape[0] and windows.shape[1:] == (
            transform(batch, lengths_tensor).shape[1:]
        ), (windows.shape, owner.shape)
        assert owner.tolist() == sorted(owner.tolist()), owner.tolist()
        assert set(owner.tolist()) == set(range(len(lengths))), owner.tolist()
        # a clip with at least one whole frame (Kaldi's 25 ms) holds audio
        shortest_audio = getattr(transform, "frame_length", 1)
        spread = windows.flatten(1).std(dim=1)
        for window, item in enumerate(owner.tolist()):
            if lengths[item] >= shortest_audio:
                assert spread[window] > 1e-6, (item, lengths, float(spread[window]))

    run()


def check_eval_is_deterministic(factory: TransformFactory) -> None:
    """In ``eval()``, the same input gives the same output."""

    @settings(deadline=None)
    @given(case=transform_inputs(factory))
    def run(case: tuple[int | None, int, int, int]) -> None:
        rate, batch, length, seed = case
        transform = build_transform(factory, rate)
        x = make_signal_batch(transform, batch, length, seed)
        torch.testing.assert_close(transform(x), transform(x), atol=0, rtol=0)

    run()


def check_train_mode_keeps_shape(factory: TransformFactory) -> None:
    """``train()`` (random crops) gives the same shape as ``eval()``."""

    @settings(deadline=None)
    @given(case=transform_inputs(factory))
    def run(case: tuple[int | None, int, int, int]) -> None:
        rate, batch, length, seed = case
        transform = build_transform(factory, rate)
        x = make_signal_batch(transform, batch, length, seed)
        torch.manual_seed(seed)
        assert transform.train()(x).shape == transform.eval()(x).shape

    run()


def check_rejects_wrong_layout(factory: TransformFactory) -> None:
    """Inputs of the wrong rank or channel count raise a ValueError naming the expected layout."""
    transform = factory().eval()
    wrong = (
        torch.zeros(2, 3, 4000)
        if transform.input_kind == "iq"
        else torch.zeros(2, 1, 4000)
    )
    try:
        transform(wrong)
    except ValueError as error:
        assert "[B," in str(error), str(error)
    else:
        raise AssertionError(
            f"{type(transform).__name__} accepted an input of shape {tuple(wrong.shape)}"
        )


def check_cpu_and_gpu_agree(factory: TransformFactory) -> None:
    """On a machine with CUDA, the transform gives the same features on CPU and GPU (skipped without one)."""
    if not torch.cuda.is_available():
        import pytest  # only the test runners call checks; the catalog itself needs no pytest

        pytest.skip("no CUDA device: CPU/GPU agreement needs a GPU")

    @settings(deadline=None)
    @given(case=transform_inputs(factory))
    def run(case: tuple[int | None, int, int, int]) -> None:
        rate, batch, length, seed = case
        transform = build_transform(factory, rate)
        x = make_signal_batch(transform, batch, length, seed)
        on_cpu = transform(x)
        on_gpu = transform.to("cuda")(x.to("cuda")).cpu()
        transform.to("cpu")
        torch.testing.assert_close(on_gpu, on_cpu, atol=2e-3, rtol=1e-3)

    run()


@fixture_registry.register("transform/kaldi_fbank")
def kaldi_fbank_fixture(workdir: Path) -> dict[str, Any]:
    return {"sample_rate": 16000, "num_mel_bins": 32, "target_frames": 24}


@fixture_registry.register("transform/log_mel")
def log_mel_fixture(workdir: Path) -> dict[str, Any]:
    return {
        "sample_rate": 16000,
        "n_fft": 128,
        "win_length": 128,
        "hop_length": 64,
        "n_mels": 16,
        "target_frames": 12,
    }


@fixture_registry.register("transform/iq_spectrogram")
def iq_spectrogram_fixture(workdir: Path) -> dict[str, Any]:
    return {"n_fft": 16, "hop_length": 8, "target_frames": 8}


@fixture_registry.register("transform/iq_patches")
def iq_patches_fixture(workdir: Path) -> dict[str, Any]:
    return {"patch_size": 8}
