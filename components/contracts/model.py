"""Contract checks every registered model (``BaseAutoencoder``) must pass, and its small fixtures.

Each ``check_<property>(factory)`` takes ``factory(**overrides) -> model`` building a *small*
instance and draws its inputs with hypothesis (settings from the active profile). The toolkit's
tests apply every check to every registered model; the emitted test suite applies the same
checks, inlined, to the script's model class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.contracts import applies_to, factory_accepts
from components.models.base import BaseAutoencoder
from components.models.layers import RotaryEmbedding2D, apply_rotary
from components.registry import fixture_registry

__all__ = [
    "check_forward_shapes_and_loss",
    "check_patchify_round_trip",
    "check_embedding_batch_independent",
    "check_same_seed_same_output",
    "check_every_parameter_gets_gradient",
    "check_rope_scores_depend_on_position_differences",
    "check_positions_survive_masking",
    "check_structured_masking",
    "check_published_parameter_counts",
]

ModelFactory = Callable[..., BaseAutoencoder]


def _kept(num_patches: int, mask_ratio: float) -> int:
    return int(num_patches * (1.0 - mask_ratio) + 1e-6)


def _sized_model(
    factory: ModelFactory, grid: tuple[int, int], **overrides: Any
) -> BaseAutoencoder:
    """A model whose input is ``grid`` patches (time x frequency) of its own patch size."""
    patch = factory().patch_size
    return factory(img_size=(grid[0] * patch[0], grid[1] * patch[1]), **overrides)


def check_forward_shapes_and_loss(factory: ModelFactory) -> None:
    """latent ``[B, 1+kept, D]``, pred ``[B, N, patch_area*C]``, mask ``[B, N]`` with ``N-kept`` ones, loss finite >= 0."""

    @settings(deadline=None)
    @given(
        batch=st.integers(1, 3),
        grid=st.tuples(st.integers(1, 4), st.integers(1, 3)),
        mask_ratio=st.floats(0.0, 0.95),
        norm_pix_loss=st.booleans(),
        in_chans=st.integers(1, 2),
        seed=st.integers(0, 2**16),
    )
    def run(
        batch: int,
        grid: tuple[int, int],
        mask_ratio: float,
        norm_pix_loss: bool,
        in_chans: int,
        seed: int,
    ) -> None:
        torch.manual_seed(seed)
        model = _sized_model(
            factory, grid, norm_pix_loss=norm_pix_loss, in_chans=in_chans
        )
        n = model.num_patches
        assert n == grid[0] * grid[1] and model.grid_size == grid
        x = torch.randn(batch, model.in_chans, *model.img_size)
        kept = _kept(n, mask_ratio)
        latent, mask, ids_restore = model.forward_encoder(x, mask_ratio)
        assert latent.shape == (batch, 1 + kept, model.embed_dim), latent.shape
        assert mask.shape == (batch, n) and ids_restore.shape == (batch, n)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert (mask.sum(dim=1) == n - kept).all(), (mask.sum(dim=1), n - kept)
        assert (
            ids_restore.sort(dim=1).values == torch.arange(n)
        ).all(), "ids_restore is not a permutation"
        loss, pred, mask = model(x, mask_ratio=mask_ratio)
        patch_area = model.patch_size[0] * model.patch_size[1] * model.in_chans
        assert pred.shape == (batch, n, patch_area), pred.shape
        assert mask.shape == (batch, n)
        assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() >= 0.0, loss

    run()


def check_patchify_round_trip(factory: ModelFactory) -> None:
    """``unpatchify(patchify(x)) == x`` and tokens are time-major: token ``t*F'+f`` is patch ``(t, f)``."""

    @settings(deadline=None)
    @given(
        batch=st.integers(1, 3),
        grid=st.tuples(st.integers(1, 4), st.integers(1, 3)),
        in_chans=st.integers(1, 2),
        seed=st.integers(0, 2**16),
    )
    def run(batch: int, grid: tuple[int, int], in_chans: int, seed: int) -> None:
        model = _sized_model(factory, grid, in_chans=in_chans)
        x = torch.randn(
            batch,
            model.in_chans,
            *model.img_size,
            generator=torch.Generator().manual_seed(seed),
        )
        tokens = model.patchify(x)
        assert torch.equal(model.unpatchify(tokens), x)
        (pt, pf), (t, f) = model.patch_size, (grid[0] - 1, grid[1] - 1)
        patch = x[:, :, t * pt : (t + 1) * pt, f * pf : (f + 1) * pf]
        assert torch.equal(
            tokens[:, t * grid[1] + f], patch.permute(0, 2, 3, 1).reshape(batch, -1)
        )
        assert tokens.shape == (batch, model.num_patches, pt * pf * in_chans)

    run()


def check_embedding_batch_independent(factory: ModelFactory) -> None:
    """In eval mode, row i of ``get_embedding`` on a batch equals the item embedded alone (atol 1e-5)."""

    @settings(deadline=None)
    @given(
        batch=st.integers(2, 3),
        pooling=st.sampled_from(["mean", "cls", "max"]),
        seed=st.integers(0, 2**16),
    )
    def run(batch: int, pooling: str, seed: int) -> None:
        torch.manual_seed(seed)
        model = factory().eval()
        x = torch.randn(batch, model.in_chans, *model.img_size)
        together = model.get_embedding(x, pooling_mode=pooling)
        assert together.shape == (batch, model.embed_dim)
        assert torch.isfinite(together).all()
        for i in range(batch):
            alone = model.get_embedding(x[i : i + 1], pooling_mode=pooling)
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-5)

    run()


def check_same_seed_same_output(factory: ModelFactory) -> None:
    """Same seed for construction and for the masking generator -> identical loss, pred and mask."""

    @settings(deadline=None)
    @given(seed=st.integers(0, 2**16), mask_ratio=st.floats(0.0, 0.95))
    def run(seed: int, mask_ratio: float) -> None:
        outputs = []
        for _ in range(2):
            torch.manual_seed(seed)
            model = factory()
            x = torch.randn(2, model.in_chans, *model.img_size)
            generator = torch.Generator().manual_seed(seed)
            outputs.append(model(x, mask_ratio=mask_ratio, generator=generator))
        for first, second in zip(*outputs):
            assert torch.equal(first, second)
        # a different generator seed gives a different mask (when more than one choice exists)
        model = factory()
        n, kept = model.num_patches, _kept(model.num_patches, mask_ratio)
        if 0 < kept < n:
            masks = {
                tuple(
                    model(
                        x,
                        mask_ratio=mask_ratio,
                        generator=torch.Generator().manual_seed(s),
                    )[2][0].tolist()
                )
                for s in range(8)
            }
            assert len(masks) > 1, "the generator does not drive the masking"

    run()


def check_every_parameter_gets_gradient(factory: ModelFactory) -> None:
    """After one backward pass every trainable parameter has a finite gradient (no unused parameters)."""

    @settings(deadline=None, max_examples=min(4, settings().max_examples))
    @given(seed=st.integers(0, 2**16), batch=st.integers(1, 3))
    def run(seed: int, batch: int) -> None:
        torch.manual_seed(seed)
        model = factory().train()
        x = torch.randn(batch, model.in_chans, *model.img_size)
        ratio = (
            0.5 if model.num_patches > 1 else 0.0
        )  # some visible and some masked tokens
        loss, _, _ = model(x, mask_ratio=ratio)
        loss.backward()
        missing = [
            name
            for name, p in model.named_parameters()
            if p.requires_grad and p.grad is None
        ]
        assert (
            not missing
        ), f"parameters without gradient (unused in forward): {missing}"
        bad = [
            name
            for name, p in model.named_parameters()
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        assert not bad, f"non-finite gradients: {bad}"

    run()


def _rope_modules(factory: ModelFactory) -> list[RotaryEmbedding2D]:
    if not factory_accepts(factory, "use_rope"):
        return []
    return [
        m for m in factory(use_rope=True).modules() if isinstance(m, RotaryEmbedding2D)
    ]


@applies_to("audiomae++")
def check_rope_scores_depend_on_position_differences(factory: ModelFactory) -> None:
    """With RoPE, ``<q at p, k at p'>`` equals ``<q at p+s, k at p'+s>`` for any 2-D shift s."""
    ropes = _rope_modules(factory)
    assert ropes, "use_rope=True built no RotaryEmbedding2D module"

    @settings(deadline=None)
    @given(
        seed=st.integers(0, 2**16),
        positions=st.lists(
            st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=2, max_size=6
        ),
        shift=st.tuples(st.integers(-20, 20), st.integers(-20, 20)),
    )
    def run(
        seed: int, positions: list[tuple[int, int]], shift: tuple[int, int]
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        for rope in ropes:
            k_tokens = len(positions)
            q = torch.randn(
                1, 1, k_tokens, rope.head_dim, generator=generator, dtype=torch.float64
            )
            k = torch.randn(
                1, 1, k_tokens, rope.head_dim, generator=generator, dtype=torch.float64
            )
            pos = torch.tensor(positions, dtype=torch.float32)

            def scores(p: torch.Tensor) -> torch.Tensor:
                cos, sin = rope(p)
                return apply_rotary(q, cos.double(), sin.double()) @ apply_rotary(
                    k, cos.double(), sin.double()
                ).transpose(-1, -2)

            moved = pos + torch.tensor(shift, dtype=torch.float32)
            torch.testing.assert_close(scores(pos), scores(moved), atol=1e-4, rtol=1e-4)
            if positions[0] != positions[1]:
                assert not torch.allclose(
                    scores(pos)[..., 0, 1], (q[..., 0, :] * k[..., 1, :]).sum(-1)
                ), "rotary embedding does not depend on position"

    run()


def check_positions_survive_masking(factory: ModelFactory) -> None:
    """Encoding kept tokens in any order gives each token the same output (positions follow tokens).

    This is what the official 1-D RoPE gets wrong: it numbers tokens inside the masked subset.
    Checked with RoPE when the model has it, else with its additive position table.
    """
    model = (
        factory(use_rope=True) if factory_accepts(factory, "use_rope") else factory()
    )
    if not hasattr(model, "encode_tokens"):
        return

    @settings(deadline=None)
    @given(seed=st.integers(0, 2**16), mask_ratio=st.floats(0.0, 0.9))
    def run(seed: int, mask_ratio: float) -> None:
        torch.manual_seed(seed)
        model.eval()
        x = torch.randn(1, model.in_chans, *model.img_size)
        _, _, ids_keep = model.sample_mask(
            1, mask_ratio, x.device, torch.Generator().manual_seed(seed)
        )
        if ids_keep.shape[1] < 2:
            return
        order = torch.randperm(ids_keep.shape[1])
        out = model.encode_tokens(x, ids_keep)
        out_permuted = model.encode_tokens(x, ids_keep[:, order])
        torch.testing.assert_close(
            out_permuted[:, 1:], out[:, 1:][:, order], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            out_permuted[:, :1], out[:, :1], atol=1e-5, rtol=1e-5
        )

    run()


def check_structured_masking(factory: ModelFactory) -> None:
    """``mask_mode="time"`` masks whole time rows (``"freq"``: whole frequency columns), but for one partial row."""
    if not factory_accepts(factory, "mask_mode"):
        return

    @settings(deadline=None)
    @given(
        mode=st.sampled_from(["time", "freq"]),
        grid=st.tuples(st.integers(1, 4), st.integers(1, 3)),
        mask_ratio=st.floats(0.0, 0.95),
        seed=st.integers(0, 2**16),
    )
    def run(mode: str, grid: tuple[int, int], mask_ratio: float, seed: int) -> None:
        model = _sized_model(factory, grid, mask_mode=mode)
        mask, _, _ = model.sample_mask(
            2, mask_ratio, torch.device("cpu"), torch.Generator().manual_seed(seed)
        )
        lines = mask.reshape(2, *grid)
        if mode == "freq":
            lines = lines.transpose(1, 2)
        per_line = lines.sum(dim=2)
        partial = ((per_line > 0) & (per_line < lines.shape[2])).sum(dim=1)
        assert (partial <= 1).all(), f"{mode} masking split more than one line: {lines}"
        assert (
            mask.sum(dim=1) == model.num_patches - _kept(model.num_patches, mask_ratio)
        ).all()

    run()


def check_published_parameter_counts(factory: ModelFactory) -> None:
    """Each ``published_parameter_counts`` entry, built on the meta device (no memory), has that many trainable parameters."""
    model_cls = type(factory())
    for kwargs, expected in getattr(model_cls, "published_parameter_counts", ()):
        with torch.device("meta"):
            model = model_cls(**kwargs)
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert (
            count == expected
        ), f"{model_cls.__name__}({kwargs}) has {count:,} trainable parameters, published {expected:,}"


@fixture_registry.register("model/audiomae++")
def tiny_audiomae_pp(workdir: Path) -> dict[str, Any]:
    """A 2+1-layer (encoder+decoder), 32-d AudioMAE++ over 4x2 patches of 4x16 (head size 16, so RoPE fits)."""
    return {
        "preset": "tiny",
        "img_size": (16, 32),
        "patch_size": (4, 16),
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "decoder_embed_dim": 32,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
    }


@fixture_registry.register("model/baseline")
def tiny_audiomae(workdir: Path) -> dict[str, Any]:
    """A 2+1-layer, 32-d AudioMAE over 4x4 patches of 8x8."""
    return {
        "preset": "tiny",
        "img_size": (32, 32),
        "patch_size": (8, 8),
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "decoder_embed_dim": 32,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
    }
