"""Contract checks of the training losses in ``components/losses.py``, and their fixtures.

A loss is a function, not a class, so its checks take ``factory(**keyword_params) -> BoundLoss``:
the loss with its keyword parameters bound (the fixture's, then the check's overrides),
callable on the tensor inputs, and able to ``sample`` valid inputs. ``loss_factory(loss,
fixture)`` builds that factory; the toolkit's tests and the emitted test suites use it in place
of calling the component (components/README.md §5). A loss fixture returns the loss's keyword
parameters plus ``"inputs"``: a function ``(generator, batch) -> tuple of tensors`` giving
valid inputs with the batch on dim 0.

The first three checks hold for every loss; the others are marked ``@applies_to(...)``. The
analytic values: for ``B`` identical, mutually orthogonal pairs, InfoNCE is
``log(1 + (B - 1) exp(-1 / T))``; uniformity of collapsed embeddings is 0, its maximum, and
never below ``-t * 2B / (B - 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts import applies_to
from components.registry import fixture_registry

InputSampler = Callable[[torch.Generator, int], tuple[torch.Tensor, ...]]

__all__ = [
    "BoundLoss",
    "check_batch_order_does_not_matter",
    "check_bfloat16_inputs_give_the_float32_value",
    "check_collapse_is_maximal",
    "check_counts_masked_patches_only",
    "check_identical_orthogonal_pairs_are_analytic",
    "check_non_negative",
    "check_scalar_with_finite_gradients",
    "check_soft_targets_agree_with_index_targets",
    "check_symmetric_in_views_and_scale_free",
    "loss_factory",
]


@dataclass(frozen=True)
class BoundLoss:
    """A loss with its keyword parameters bound, and a sampler of valid inputs."""

    loss: Callable[..., torch.Tensor]
    keywords: dict[str, Any] = field(default_factory=dict)
    inputs: InputSampler | None = None

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.loss(*tensors, **self.keywords)

    def sample(
        self, generator: torch.Generator, batch: int
    ) -> tuple[torch.Tensor, ...]:
        """Valid inputs for a batch of ``batch`` (>= 2), from the fixture's ``"inputs"``."""
        if self.inputs is None:
            name = getattr(self.loss, "__name__", repr(self.loss))
            raise ValueError(
                f"{name}: its contract fixture gives no 'inputs' sampler; return "
                "{'inputs': fn(generator, batch) -> tensors, ...} from it"
            )
        return self.inputs(generator, batch)


LossFactory = Callable[..., BoundLoss]


def loss_factory(
    loss: Callable[..., torch.Tensor], fixture: Mapping[str, Any] | None = None
) -> LossFactory:
    """``factory(**kw)`` for a loss: binds the fixture's keyword parameters, then ``kw``."""
    keywords = dict(fixture or {})
    inputs = keywords.pop("inputs", None)

    def factory(**overrides: Any) -> BoundLoss:
        return BoundLoss(loss, {**keywords, **overrides}, inputs)

    return factory


# --------------------------------------------------------------------------- every loss


def check_scalar_with_finite_gradients(factory: LossFactory) -> None:
    """The loss is a finite float32 scalar, and its gradients w.r.t. float inputs are finite."""

    @settings(deadline=None)
    @given(batch=st.integers(2, 8), seed=st.integers(0, 2**16))
    def run(batch: int, seed: int) -> None:
        loss = factory()
        tensors = loss.sample(torch.Generator().manual_seed(seed), batch)
        leaves = [
            t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors
        ]
        value = loss(*leaves)
        assert value.dim() == 0 and value.dtype == torch.float32, value
        assert torch.isfinite(value), float(value)
        value.backward()
        grads = [t.grad for t in leaves if t.requires_grad and t.grad is not None]
        assert grads, "the loss does not depend on any of its float inputs"
        assert all(torch.isfinite(g).all() for g in grads)

    run()


def check_batch_order_does_not_matter(factory: LossFactory) -> None:
    """Permuting the batch (the same way in every input) leaves the value unchanged."""

    @settings(deadline=None)
    @given(batch=st.integers(2, 8), seed=st.integers(0, 2**16))
    def run(batch: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        loss = factory()
        tensors = loss.sample(generator, batch)
        order = torch.randperm(batch, generator=generator)
        value, permuted = loss(*tensors), loss(*(t[order] for t in tensors))
        assert torch.allclose(value, permuted, rtol=1e-5, atol=1e-5), (value, permuted)

    run()


def check_bfloat16_inputs_give_the_float32_value(factory: LossFactory) -> None:
    """bf16 inputs (autocast outputs) give the float32 loss of the same values, in float32."""

    @settings(deadline=None)
    @given(batch=st.integers(2, 8), seed=st.integers(0, 2**16))
    def run(batch: int, seed: int) -> None:
        loss = factory()
        tensors = loss.sample(torch.Generator().manual_seed(seed), batch)
        low = [t.bfloat16() if t.is_floating_point() else t for t in tensors]
        value = loss(*low)
        reference = loss(*(t.float() if t.is_floating_point() else t for t in low))
        assert value.dtype == torch.float32, value.dtype
        assert torch.allclose(value, reference, rtol=1e-5, atol=1e-5), (
            value,
            reference,
        )

    run()


@applies_to("masked_mse", "info_nce", "soft_target_cross_entropy")
def check_non_negative(factory: LossFactory) -> None:
    """Squared errors and cross-entropies are never negative (uniformity is: it is a log-mean)."""

    @settings(deadline=None)
    @given(batch=st.integers(2, 8), seed=st.integers(0, 2**16))
    def run(batch: int, seed: int) -> None:
        loss = factory()
        value = loss(*loss.sample(torch.Generator().manual_seed(seed), batch))
        assert float(value) >= 0.0, float(value)

    run()


# --------------------------------------------------------------------------- one loss each


def _orthonormal_rows(batch: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(
        torch.randn(dim, batch, generator=generator, dtype=torch.float64)
    )
    return q.t().float()  # [batch, dim], orthonormal rows


@applies_to("info_nce")
def check_identical_orthogonal_pairs_are_analytic(factory: LossFactory) -> None:
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


@applies_to("info_nce")
def check_symmetric_in_views_and_scale_free(factory: LossFactory) -> None:
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


@applies_to("uniformity")
def check_collapse_is_maximal(factory: LossFactory) -> None:
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


@applies_to("masked_mse")
def check_counts_masked_patches_only(factory: LossFactory) -> None:
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


@applies_to("soft_target_cross_entropy")
def check_soft_targets_agree_with_index_targets(factory: LossFactory) -> None:
    """One-hot soft targets give the index-target value, which is torch's cross-entropy (smoothing included)."""

    @settings(deadline=None)
    @given(
        batch=st.integers(1, 6),
        classes=st.integers(2, 8),
        smoothing=st.floats(0.0, 0.5),
        seed=st.integers(0, 2**16),
    )
    def run(batch: int, classes: int, smoothing: float, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        logits = torch.randn(batch, classes, generator=generator)
        labels = torch.randint(0, classes, (batch,), generator=generator)
        loss = factory(label_smoothing=smoothing)
        value = loss(logits, labels)
        reference = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        assert torch.allclose(value, reference, atol=1e-5), (value, reference)
        one_hot = F.one_hot(labels, classes).float()
        assert torch.allclose(loss(logits, one_hot), value, atol=1e-5)

    run()


# --------------------------------------------------------------------------- fixtures


def _masked_patches(generator: torch.Generator, batch: int) -> tuple[torch.Tensor, ...]:
    pred = torch.randn(batch, 6, 4, generator=generator)
    target = torch.randn(batch, 6, 4, generator=generator)
    mask = (torch.rand(batch, 6, generator=generator) < 0.75).float()
    mask[:, 0] = 1.0  # every item has a masked patch ...
    mask[:, 1] = 0.0  # ... and a visible one
    return pred, target, mask


def _paired_views(generator: torch.Generator, batch: int) -> tuple[torch.Tensor, ...]:
    z1 = torch.randn(batch, 8, generator=generator)
    return z1, z1 + 0.5 * torch.randn(batch, 8, generator=generator)


def _embeddings(generator: torch.Generator, batch: int) -> tuple[torch.Tensor, ...]:
    return (torch.randn(batch, 8, generator=generator),)


def _logits_and_labels(
    generator: torch.Generator, batch: int
) -> tuple[torch.Tensor, ...]:
    logits = torch.randn(batch, 5, generator=generator)
    return logits, torch.randint(0, 5, (batch,), generator=generator)


@fixture_registry.register("loss/masked_mse")
def masked_mse_fixture(workdir: Path) -> dict[str, Any]:
    """[B, 6, 4] patches, per-patch normalised targets, about 3/4 of the patches masked."""
    return {"norm_pix": True, "inputs": _masked_patches}


@fixture_registry.register("loss/info_nce")
def info_nce_fixture(workdir: Path) -> dict[str, Any]:
    """Two correlated [B, 8] views at SimCLR's temperature."""
    return {"temperature": 0.1, "inputs": _paired_views}


@fixture_registry.register("loss/uniformity")
def uniformity_fixture(workdir: Path) -> dict[str, Any]:
    """[B, 8] Gaussian embeddings, Wang & Isola's t = 2."""
    return {"t": 2.0, "inputs": _embeddings}


@fixture_registry.register("loss/soft_target_cross_entropy")
def soft_target_cross_entropy_fixture(workdir: Path) -> dict[str, Any]:
    """[B, 5] logits against class indices, with label smoothing."""
    return {"label_smoothing": 0.1, "inputs": _logits_and_labels}
