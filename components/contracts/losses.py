"""Contract checks of the training losses in ``components/losses.py``.

Each ``check_<property>(factory)`` takes ``factory(**keyword_params) -> loss callable`` (the
loss with its keyword parameters bound, e.g. ``functools.partial(info_nce_loss, **kw)``) and
draws inputs with hypothesis. The analytic values: for ``B`` identical, mutually orthogonal
pairs, InfoNCE is ``log(1 + (B - 1) exp(-1 / T))``; uniformity of collapsed embeddings is 0,
its maximum, and never below ``-t * 2B / (B - 1)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

LossFactory = Callable[..., Callable[..., torch.Tensor]]

__all__ = [
    "check_info_nce_identical_pairs",
    "check_info_nce_view_symmetry_and_scale",
    "check_masked_mse_counts_masked_patches_only",
    "check_uniformity_collapsed_is_maximal",
]


def _orthonormal_rows(batch: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(
        torch.randn(dim, batch, generator=generator, dtype=torch.float64)
    )
    return q.t().float()  # [batch, dim], orthonormal rows


def check_info_nce_identical_pairs(factory: LossFactory) -> None:
    """Identical, orthogonal pairs give ``log(1 + (B - 1) exp(-1/T))`` (either direction, any scale)."""

    @settings(deadline=None)
    @given(
        batch=st.integers(2, 12),
        extra_dims=st.integers(0, 6),
        temperature=st.floats(0.05, 2.0),
        scale=st.floats(0.1, 10.0),
        seed=st.integers(0, 2**16),
    )
    def run(
        batch: int, extra_dims: int, temperature: float, scale: float, seed: int
    ) -> None:
        z = _orthonormal_rows(batch, batch + extra_dims, seed) * scale
        value = factory(temperature=temperature)(z, z.clone())
        expected = math.log1p((batch - 1) * math.exp(-1.0 / temperature))
        assert value.dim() == 0 and torch.isfinite(value)
        assert math.isclose(float(value), expected, rel_tol=1e-4, abs_tol=1e-5), (
            float(value),
            expected,
        )

    run()


def check_info_nce_view_symmetry_and_scale(factory: LossFactory) -> None:
    """The symmetric loss does not depend on the order of the views or on their norms; gradients are finite."""

    @settings(deadline=None)
    @given(
        batch=st.integers(2, 10),
        dim=st.integers(2, 16),
        scale=st.floats(0.01, 100.0),
        seed=st.integers(0, 2**16),
    )
    def run(batch: int, dim: int, scale: float, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        z1 = torch.randn(batch, dim, generator=generator, requires_grad=True)
        z2 = torch.randn(batch, dim, generator=generator)
        loss = factory(symmetric=True)
        a, b = loss(z1, z2), loss(z2, z1)
        assert torch.allclose(a, b, atol=1e-5), (a, b)
        assert torch.allclose(a, loss(z1 * scale, z2), atol=1e-4)
        a.backward()
        assert z1.grad is not None and torch.isfinite(z1.grad).all()

    run()


def check_uniformity_collapsed_is_maximal(factory: LossFactory) -> None:
    """Collapsed embeddings score 0 (the maximum); any embeddings score within ``[-t 2B/(B-1), 0]``."""

    @settings(deadline=None)
    @given(
        batch=st.integers(2, 16),
        dim=st.integers(1, 16),
        t=st.floats(0.5, 4.0),
        seed=st.integers(0, 2**16),
    )
    def run(batch: int, dim: int, t: float, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        loss = factory(t=t)
        point = torch.randn(1, dim, generator=generator)
        collapsed = loss(
            point.repeat(batch, 1) * torch.rand(batch, 1, generator=generator).add(0.5)
        )
        spread = loss(torch.randn(batch, dim, generator=generator))
        assert abs(float(collapsed)) < 1e-5, float(collapsed)
        assert float(spread) <= float(collapsed) + 1e-6
        assert float(spread) >= -t * 2 * batch / (batch - 1) - 1e-4, float(spread)

    run()


def check_masked_mse_counts_masked_patches_only(factory: LossFactory) -> None:
    """Only masked patches count: changing a visible patch's prediction changes nothing; the value is their mean MSE."""

    @settings(deadline=None)
    @given(
        batch=st.integers(1, 4),
        patches=st.integers(2, 12),
        size=st.integers(2, 8),
        seed=st.integers(0, 2**16),
    )
    def run(batch: int, patches: int, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        pred = torch.randn(batch, patches, size, generator=generator)
        target = torch.randn(batch, patches, size, generator=generator)
        mask = (torch.rand(batch, patches, generator=generator) < 0.5).float()
        mask[0, 0] = 1.0
        mask[0, 1] = 0.0  # at least one masked and one visible patch
        loss = factory(norm_pix=False)
        value = loss(pred, target, mask)
        expected = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        assert torch.allclose(value, expected, atol=1e-5), (value, expected)
        changed = pred.clone()
        changed[0, 1] += 100.0
        assert torch.allclose(loss(changed, target, mask), value, atol=1e-5)
        normalised = factory(norm_pix=True)(pred, target, mask)
        assert torch.isfinite(normalised)

    run()


def loss_factory(loss: Callable[..., Any]) -> LossFactory:
    """``factory(**kw)`` for a loss function: binds its keyword parameters."""

    def factory(**keywords: Any) -> Callable[..., torch.Tensor]:
        return lambda *tensors: loss(*tensors, **keywords)

    return factory
