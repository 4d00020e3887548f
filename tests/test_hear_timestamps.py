"""HEAR timestamps are the centres of the embeddings' windows, in milliseconds.

The HEAR API (https://hearbenchmark.com/hear-api.html, ``get_timestamp_embeddings``): "This
function must return embeddings at regular intervals centered at timestamps. The model must
also return the corresponding timestamps, in milliseconds." ``HearEncoder`` shares a clip's
duration evenly among its tokens and stamps each at the centre of its share; the official
AudioMAE++ runtime (``hear_api/feature_helper.py``) stamps their starts.
"""

from __future__ import annotations

import math

import pytest
import torch

from components.models import AudioMAE
from components.recipes.hear import HearEncoder
from components.transforms import KaldiFbank

SAMPLE_RATE, FRAME, SHIFT, TOKEN_FRAMES = 16000, 400, 160, 16


@pytest.fixture(scope="module")
def encoder() -> HearEncoder:
    torch.manual_seed(0)
    model = AudioMAE(preset="tiny", img_size=(64, 128), depth=1, decoder_depth=1)
    transform = KaldiFbank(sample_rate=SAMPLE_RATE, target_frames=None)
    return HearEncoder(model, transform)


def tokens_of(samples: int) -> int:
    frames = 1 + (max(samples, FRAME) - FRAME) // SHIFT  # Kaldi's whole 25 ms frames
    return math.ceil(frames / TOKEN_FRAMES)


def stamps(encoder: HearEncoder, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    audio = torch.rand(2, samples, generator=torch.Generator().manual_seed(samples))
    return encoder.timestamp_embeddings(audio * 2 - 1)


def test_a_clip_of_whole_tokens_is_stamped_at_their_centres(encoder: HearEncoder) -> None:
    # 0.8 s = 5 tokens of 16 frames x 10 ms: windows [0, 160), [160, 320), ... ms
    embeddings, timestamps = stamps(encoder, 12800)
    assert embeddings.shape[:2] == timestamps.shape == (2, 5)
    assert timestamps.dtype == torch.float32
    expected = torch.tensor([80.0, 240.0, 400.0, 560.0, 720.0])
    torch.testing.assert_close(timestamps, expected.expand(2, 5), rtol=0, atol=1e-4)


@pytest.mark.parametrize("samples", [0, 399, 16000, 17120, 31680, 64000, 5 * 16000 + 37])
def test_timestamps_are_regular_centres_inside_the_clip(
    encoder: HearEncoder, samples: int
) -> None:
    embeddings, timestamps = stamps(encoder, samples)
    tokens = tokens_of(samples)
    assert embeddings.shape[:2] == timestamps.shape == (2, tokens)
    duration = 1000.0 * samples / SAMPLE_RATE
    hop = duration / tokens
    expected = (torch.arange(tokens, dtype=torch.float64) + 0.5) * hop
    torch.testing.assert_close(timestamps[0].double(), expected, rtol=0, atol=1e-3)
    assert timestamps.eq(timestamps[:1]).all()
    if tokens > 1:  # what hearvalidator checks, with room to spare
        assert float(timestamps.min()) == pytest.approx(hop / 2, abs=1e-3)
        assert float(timestamps.max()) == pytest.approx(duration - hop / 2, abs=1e-3)
        assert float(timestamps.max()) < duration
        steps = torch.diff(timestamps[0].double())
        assert float((steps - hop).abs().max()) < 1e-3


def test_a_minute_stays_on_its_grid(encoder: HearEncoder) -> None:
    samples = 60 * SAMPLE_RATE + 1234
    _, timestamps = stamps(encoder, samples)
    tokens = tokens_of(samples)
    hop = 1000.0 * samples / SAMPLE_RATE / tokens
    assert hop == pytest.approx(160.0, rel=0.01)
    assert float(timestamps[0, -1]) == pytest.approx((tokens - 0.5) * hop, abs=1e-2)
