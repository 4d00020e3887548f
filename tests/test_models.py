"""Model catalog: published sizes, the AudioMAE++ block as published, presets, classifier, LR decay."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch import nn

import components.contracts.model as contracts
from components.models import AudioMAE, AudioMAEClassifier, AudioMAEPlusPlus, BaseAutoencoder, param_groups_lrd
from components.models import layers
from components.models.layers import Attention, MacaronBlock, SwiGLU, explicit_attention, swiglu_hidden_features
from components.registry import model_registry

torch.set_num_threads(1)


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def on_meta(factory, **kwargs):
    with torch.device("meta"):
        return factory(**kwargs)


TINY_PP = dict(preset="tiny", img_size=(16, 32), embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
TINY_BASE = dict(preset="tiny", img_size=(32, 32), patch_size=(8, 8), embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


# ---------------------------------------------------------------- published sizes
@pytest.mark.parametrize(
    "preset,own_ln3,shared_ln2",
    [("tiny", 20_859_200, 20_851_520), ("base", 154_014_272, 153_992_768), ("large", 525_575_504, 525_522_256)],
)
def test_audiomae_pp_parameter_counts_match_the_official_model(preset: str, own_ln3: int, shared_ln2: int) -> None:
    assert trainable(on_meta(AudioMAEPlusPlus, preset=preset)) == own_ln3
    assert trainable(on_meta(AudioMAEPlusPlus, preset=preset, share_ffn2_norm=True)) == shared_ln2


def test_baseline_parameter_counts_match_vit_b_audiomae() -> None:
    model = on_meta(AudioMAE, img_size=(512, 128))
    decoder = ("decoder_", "mask_token")
    encoder = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(decoder))
    assert encoder == 85_254_144
    assert trainable(model) == 110_999_808
    # the decoder does not depend on the input size: AudioSet's 1024x128 has the same count
    assert trainable(on_meta(AudioMAE)) == 110_999_808


def test_interface_names_and_defaults() -> None:
    model = on_meta(model_registry.create, name="audiomae++", preset="base")
    assert (model.img_size, model.patch_size, model.grid_size, model.num_patches) == ((200, 80), (4, 16), (50, 5), 250)
    assert (model.embed_dim, model.mask_ratio, model.in_chans) == (768, 0.8, 1)
    baseline = on_meta(model_registry.create, name="baseline", img_size=(512, 128))
    assert (baseline.grid_size, baseline.embed_dim, len(baseline.decoder_blocks)) == ((32, 8), 768, 8)
    assert isinstance(model, BaseAutoencoder) and isinstance(baseline, BaseAutoencoder)
    assert AudioMAEPlusPlus.__init__.__defaults__[0] == "base"


def test_explicit_keywords_override_the_preset() -> None:
    model = on_meta(AudioMAEPlusPlus, preset="large", depth=3, decoder_embed_dim=256)
    assert (model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads) == (1024, 3, 16)
    assert model.decoder_embed.out_features == 256 and len(model.decoder_blocks) == 4


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(preset="huge"), "unknown preset 'huge'"),
        (dict(img_size=(201, 80)), "not a multiple of patch_size"),
        (dict(mask_ratio=1.0), "mask_ratio"),
        (dict(embed_dim=100, num_heads=3), "not divisible by num_heads"),
        (dict(num_heads=0), "num_heads must be >= 1, got 0"),
        (dict(decoder_num_heads=0), "decoder_num_heads must be >= 1, got 0"),
        (dict(embed_dim=0), "embed_dim must be >= 1, got 0"),
        (dict(in_chans=0), "in_chans must be >= 1, got 0"),
        (dict(depth=0), "depth must be >= 1, got 0"),
        (dict(drop_path_rate=1.5), r"drop_path_rate must be in \[0, 1\), got 1.5"),
    ],
)
def test_bad_configurations_fail_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        on_meta(AudioMAEPlusPlus, **{"preset": "tiny", **kwargs})


def test_wrong_input_shape_names_the_expected_shape() -> None:
    model = AudioMAEPlusPlus(**TINY_PP)
    with pytest.raises(ValueError, match=r"expects input \[B, 1, 16, 32\]"):
        model(torch.randn(1, 1, 32, 16))


@pytest.mark.parametrize("dim,hidden", [(192, 512), (384, 1024), (768, 2048), (1024, 2730), (512, 1365)])
def test_swiglu_width_is_int_8d_over_3(dim: int, hidden: int) -> None:
    assert swiglu_hidden_features(dim) == hidden
    assert on_meta(SwiGLU, in_features=dim).fc1_x.out_features == hidden


# ---------------------------------------------------------------- the block as published
@settings(deadline=None)
@given(seed=st.integers(0, 2**16), tokens=st.integers(1, 6), share=st.booleans())
def test_macaron_block_computes_the_published_equations(seed: int, tokens: int, share: bool) -> None:
    torch.manual_seed(seed)
    block = MacaronBlock(16, 2, share_ffn2_norm=share).eval()
    for p in block.parameters():  # non-trivial norms so LN2 and LN3 differ
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, tokens, 16)
    h = x + 0.5 * block.ffn1(block.norm1(x))
    h = h + block.attn(block.norm2(h))
    ffn2 = block.ffn2
    inner = block.norm2(h) if share else block.norm3(h)
    swiglu = ffn2.fc2(ffn2.norm(torch.nn.functional.silu(ffn2.fc1_g(inner)) * ffn2.fc1_x(inner)))
    torch.testing.assert_close(block(x), h + swiglu)
    assert (block.norm3 is None) == share


def test_full_size_tiny_preset_runs_at_200x80() -> None:
    torch.manual_seed(0)
    model = AudioMAEPlusPlus(preset="tiny", depth=1, decoder_depth=1)
    loss, pred, mask = model(torch.randn(1, 1, 200, 80))
    assert pred.shape == (1, 250, 64) and int(mask.sum()) == 200 and torch.isfinite(loss)


# ---------------------------------------------------------------- the checks catch real bugs
class UnusedParameterMAE(AudioMAEPlusPlus):
    """The official norm3 bug, in miniature: a parameter the forward never reads."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.unused_norm = nn.LayerNorm(self.embed_dim)


class SubsetPositionMAE(AudioMAEPlusPlus):
    """The official RoPE bug: positions numbered inside the masked subset."""

    def encode_tokens(self, x, ids_keep=None):
        if ids_keep is not None:
            ids_keep = torch.arange(ids_keep.shape[1]).expand_as(ids_keep)
        return super().encode_tokens(x, ids_keep)


@pytest.fixture
def no_shrinking():
    """A failing check is the expected outcome here: skip hypothesis' shrinking (seconds of work)."""
    current = os.environ.get("SIGMAE_HYPOTHESIS_PROFILE", "fast")
    settings.register_profile("models-no-shrink", parent=settings.get_profile(current), phases=[Phase.generate])
    settings.load_profile("models-no-shrink")
    yield
    settings.load_profile(current)


def test_gradient_check_catches_an_unused_parameter(no_shrinking) -> None:
    with pytest.raises(AssertionError, match="unused_norm"):
        contracts.check_every_parameter_gets_gradient(lambda **o: UnusedParameterMAE(**{**TINY_PP, **o}))


def test_position_check_catches_positions_numbered_inside_the_masked_subset(no_shrinking) -> None:
    with pytest.raises(AssertionError):
        contracts.check_positions_survive_masking(lambda **o: SubsetPositionMAE(**{**TINY_PP, **o}))


def test_masking_uses_the_given_generator_on_every_call() -> None:
    model = AudioMAEPlusPlus(**TINY_PP)
    x = torch.randn(2, 1, 16, 32)
    first = model.forward_encoder(x, 0.5, generator=torch.Generator().manual_seed(3))[1]
    again = model.forward_encoder(x, 0.5, generator=torch.Generator().manual_seed(3))[1]
    other = [model.forward_encoder(x, 0.5, generator=torch.Generator().manual_seed(s))[1] for s in range(4, 10)]
    assert torch.equal(first, again) and any(not torch.equal(first, m) for m in other)


def test_norm_pix_loss_targets_normalised_patches() -> None:
    model = AudioMAE(**TINY_BASE, norm_pix_loss=True)
    x = torch.randn(2, 1, 32, 32) * 5 + 3
    target = model.patchify(x)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    mask = torch.ones(2, model.num_patches)
    assert model.reconstruction_loss(x, target, mask).item() < 1e-8
    assert model.reconstruction_loss(x, model.patchify(x), mask).item() > 1.0


# ---------------------------------------------------------------- classifier
def test_classifier_logits_gradients_and_decoder_removed() -> None:
    torch.manual_seed(0)
    classifier = AudioMAEClassifier(AudioMAEPlusPlus(**TINY_PP), num_classes=7, drop_path_rate=0.2).train()
    assert classifier.encoder.decoder_blocks is None and isinstance(classifier.encoder.norm, nn.Identity)
    assert [b.drop_path.drop_prob for b in classifier.encoder.blocks] == [0.0, 0.2]
    logits = classifier(torch.randn(3, 1, 16, 32))
    assert logits.shape == (3, 7)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in classifier.parameters() if p.requires_grad)
    assert classifier.head.weight.detach().abs().max() < 1e-4  # trunc-normal std 2e-5


def test_classifier_fine_tune_masking_drops_whole_rows_and_columns_in_training_only() -> None:
    classifier = AudioMAEClassifier(AudioMAE(**{**TINY_BASE, "img_size": (64, 32)}), num_classes=3, mask_t_prob=0.5, mask_f_prob=0.5)
    ids = classifier.train().sample_kept_tokens(4, torch.device("cpu"))
    rows, cols = classifier.encoder.grid_size  # 8 x 4 -> keep 4 rows x 2 columns
    assert ids.shape == (4, 8)
    kept_rows, kept_cols = ids // cols, ids % cols
    for r, c in zip(kept_rows, kept_cols):
        assert len(set(r.tolist())) == 4 and len(set(c.tolist())) == 2
        assert {(a, b) for a in set(r.tolist()) for b in set(c.tolist())} == set(zip(r.tolist(), c.tolist()))
    assert classifier.eval().sample_kept_tokens(4, torch.device("cpu")) is None
    assert classifier(torch.randn(2, 1, 64, 32)).shape == (2, 3)


def test_linear_probe_trains_only_the_head() -> None:
    classifier = AudioMAEClassifier(AudioMAEPlusPlus(**TINY_PP), num_classes=4, linear_probe=True)
    trainable_names = [n for n, p in classifier.named_parameters() if p.requires_grad]
    assert trainable_names == ["head.weight", "head.bias"]
    classifier(torch.randn(2, 1, 16, 32)).sum().backward()


def test_layer_decay_groups() -> None:
    classifier = AudioMAEClassifier(AudioMAEPlusPlus(**TINY_PP), num_classes=4)
    groups = param_groups_lrd(classifier, weight_decay=0.05, layer_decay=0.5)
    scale = {name: g["lr_scale"] for g in groups for name in g["param_names"]}
    decay = {name: g["weight_decay"] for g in groups for name in g["param_names"]}
    # 2 blocks -> layers 0 (embeddings), 1, 2, 3 (head)
    assert scale["encoder.patch_embed.proj.weight"] == 0.125 and scale["encoder.cls_token"] == 0.125
    assert scale["encoder.blocks.0.attn.qkv.weight"] == 0.25 and scale["encoder.blocks.1.ffn2.fc2.weight"] == 0.5
    assert scale["head.weight"] == 1.0 and scale["fc_norm.weight"] == 1.0
    assert decay["encoder.blocks.0.attn.qkv.weight"] == 0.05 and decay["head.weight"] == 0.05
    for name in ("encoder.cls_token", "encoder.blocks.0.attn.qkv.bias", "encoder.blocks.0.norm1.weight", "fc_norm.bias"):
        assert decay[name] == 0.0, name
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in classifier.parameters() if p.requires_grad)
    torch.optim.AdamW(groups, lr=1e-3)  # the groups are valid optimizer input


@pytest.mark.parametrize(
    "flags",
    [
        {"use_rope": True},
        {"share_ffn2_norm": True},
        {"use_macaron": False},
        {"use_macaron": False, "use_swiglu": False},
        {"use_swiglu": False, "mask_mode": "time"},
        {"drop_path_rate": 0.3, "mask_mode": "freq"},
    ],
    ids=lambda flags: ",".join(f"{k}={v}" for k, v in flags.items()),
)
def test_feature_flags_keep_the_contract(flags: dict) -> None:
    def factory(**overrides):
        return AudioMAEPlusPlus(**{**TINY_PP, **flags, **overrides})

    contracts.check_forward_shapes_and_loss(factory)
    contracts.check_every_parameter_gets_gradient(factory)
    contracts.check_embedding_batch_independent(factory)


@pytest.mark.parametrize("use_rope", [False, True])
def test_bf16_autocast_trains(use_rope: bool) -> None:
    """The emitted script's --dtype bf16 path: finite loss and gradients under autocast."""
    torch.manual_seed(0)
    model = AudioMAEPlusPlus(**TINY_PP, use_rope=use_rope)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pred, mask = model(torch.randn(2, 1, 16, 32), mask_ratio=0.5)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ---------------------------------------------------------------- attention kernels
@settings(deadline=None)
@given(
    seed=st.integers(0, 2**16),
    heads=st.integers(1, 4),
    tokens=st.integers(1, 40),
    head_dim=st.sampled_from([8, 16, 32, 48, 64]),
)
def test_explicit_attention_is_the_fused_kernels_math(seed: int, heads: int, tokens: int, head_dim: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, heads, tokens, head_dim, generator=gen) for _ in range(3))
    fused = torch.nn.functional.scaled_dot_product_attention
    # fp32: equal up to summation order (sharpened scores: differences reach ~1e-5)
    torch.testing.assert_close(explicit_attention(q * 3, k * 3, v), fused(q * 3, k * 3, v), atol=5e-5, rtol=1e-4)
    # in bf16 it agrees with the fused kernel in bf16
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    low = explicit_attention(q, k, v)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), fused(q, k, v).float(), atol=0.03, rtol=0.03)


def test_attention_takes_the_explicit_path_only_for_low_precision_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[torch.dtype] = []

    def spy(q, k, v, dropout_p=0.0):
        calls.append(q.dtype)
        return explicit_attention(q, k, v, dropout_p)

    monkeypatch.setattr(layers, "explicit_attention", spy)
    torch.manual_seed(0)
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 10, 32)
    reference = attn(x)
    assert calls == []  # float32: the fused kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attn(x)
    assert calls == [torch.bfloat16]
    torch.testing.assert_close(low.float(), reference, atol=0.05, rtol=0.05)


def test_explicit_attention_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    attn = Attention(32, 4, attn_drop=0.5)
    x = torch.randn(2, 10, 32).bfloat16()
    attn = attn.bfloat16()
    first, second = attn(x), attn(x)
    assert not torch.equal(first, second)  # dropout on the attention probabilities
    attn.eval()
    torch.testing.assert_close(attn(x), attn(x), atol=0, rtol=0)
