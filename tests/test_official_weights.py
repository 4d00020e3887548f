"""Official checkpoint layouts: every key mapped, every shape equal, round trips exact, errors by name.

The manifests in tests/data/model_official_*.json list the official state dicts' keys and
shapes (read off the official code). Synthetic state dicts are built from them on the meta
device, so even the 525 M-parameter large preset costs no memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from components.models import AudioMAE, AudioMAEClassifier, AudioMAEPlusPlus
from components.models.official_weights import (
    CheckpointMismatchError,
    convert_to_ours,
    detect_layout,
    export_official_state_dict,
    load_official_checkpoint,
    official_audiomae_pos_embed,
)
from components.models.layers import sincos_pos_embed_2d
from components.registry import model_registry

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data"
TINY_PP = dict(preset="tiny", img_size=(16, 32), embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
TINY_BASE = dict(preset="tiny", img_size=(32, 32), patch_size=(8, 8), embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def manifest(name: str) -> dict:
    return json.loads((DATA / f"model_official_{name}.json").read_text())


def meta_state(name: str) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in manifest(name)["keys"].items()}


def on_meta(factory, **kwargs):
    with torch.device("meta"):
        return factory(**kwargs)


@pytest.mark.parametrize("preset", ["tiny", "base", "large"])
@pytest.mark.parametrize("share", [True, False])
def test_official_audiomae_pp_layout_maps_every_key(preset: str, share: bool) -> None:
    official = meta_state(f"audiomaepp_{preset}")
    assert detect_layout(official) == "audiomae++"
    model = on_meta(AudioMAEPlusPlus, preset=preset, share_ffn2_norm=share)
    _, report = convert_to_ours(model, official)
    assert report.ok, report.describe()
    depth = len(model.blocks) + len(model.decoder_blocks)
    assert len(report.dropped) == 2 * depth and all("norm3" in key for key in report.dropped)
    # the manifest's count includes the official, unused norm3
    official_trainable = manifest(f"audiomaepp_{preset}")["trainable_params"]
    norm3 = sum(2 * b.norm1.weight.numel() for b in [*model.blocks, *model.decoder_blocks])
    expected = official_trainable if not share else official_trainable - norm3
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("preset", ["tiny", "base", "large"])
def test_export_gives_back_the_official_layout(preset: str) -> None:
    model = on_meta(AudioMAEPlusPlus, preset=preset, share_ffn2_norm=True)
    exported = export_official_state_dict(model)
    expected = manifest(f"audiomaepp_{preset}")["keys"]
    assert sorted(exported) == sorted(expected)
    assert all(list(exported[k].shape) == expected[k] for k in expected)


def test_official_audiomae_layout_is_ours_and_loads_into_a_classifier() -> None:
    official = meta_state("audiomae_vitb_1024x128_global8")
    assert detect_layout(official) == "audiomae"
    _, report = convert_to_ours(on_meta(AudioMAE), official)
    assert report.ok and not report.dropped, report.describe()
    assert manifest("audiomae_vitb_1024x128_global8")["trainable_params"] == sum(p.numel() for p in on_meta(AudioMAE).parameters())

    classifier = on_meta(lambda: AudioMAEClassifier(AudioMAE(), num_classes=527))
    _, report = convert_to_ours(classifier, official)
    assert report.ok, report.describe()
    assert sorted(report.fresh) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert any(key.startswith("encoder.decoder_blocks.") for key in report.dropped)

    # a fine-tuned official checkpoint: encoder keys without norm, plus fc_norm and head
    finetuned = {k: v for k, v in official.items() if not k.startswith(("decoder", "mask_token", "norm."))}
    finetuned |= {
        "fc_norm.weight": torch.empty(768, device="meta"),
        "fc_norm.bias": torch.empty(768, device="meta"),
        "head.weight": torch.empty(527, 768, device="meta"),
        "head.bias": torch.empty(527, device="meta"),
    }
    assert detect_layout(finetuned) == "audiomae_finetuned"
    _, report = convert_to_ours(classifier, finetuned)
    assert report.ok and not report.fresh, report.describe()


def test_official_position_table_is_copied_row_for_row() -> None:
    """The official 8x64-laid-out table differs from ours but is what its weights were trained with."""
    official_table = official_audiomae_pos_embed(32, (8, 4))
    ours = sincos_pos_embed_2d(32, (8, 4))
    assert official_table.shape == ours.shape and not torch.allclose(official_table, ours)
    # official token i carries the code of cell (i // T', i % T') of its (F', T') grid: token 9 -> (1, 1)
    torch.testing.assert_close(official_table[0, 1 + 9], ours[0, 1 + 1 * 4 + 1])
    model = AudioMAE(**{**TINY_BASE, "img_size": (64, 32)})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["pos_embed"] = official_table
    load_official_checkpoint(model, state)
    assert torch.equal(model.pos_embed, official_table)


def test_audioset_table_is_cropped_for_esc50_inputs_as_audiomae_does() -> None:
    """1024-frame (64x8 grid) tables into a 512-frame (32x8) model: the official table for 512 frames."""
    official = meta_state("audiomae_vitb_1024x128_global8")
    official["pos_embed"] = official_audiomae_pos_embed(768, (64, 8))
    official["decoder_pos_embed"] = official_audiomae_pos_embed(512, (64, 8))
    model = on_meta(AudioMAE, img_size=(512, 128))
    state, report = convert_to_ours(model, official)
    assert report.ok, report.describe()
    assert sum("cropped" in line for line in report.dropped) == 2
    torch.testing.assert_close(state["pos_embed"], official_audiomae_pos_embed(768, (32, 8)))
    torch.testing.assert_close(state["decoder_pos_embed"], official_audiomae_pos_embed(512, (32, 8)))


def _random_official_pp(share_model: AudioMAEPlusPlus, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    for parameter in share_model.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    return export_official_state_dict(share_model)


def test_round_trip_ours_official_ours_is_exact() -> None:
    source = AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True)
    official = _random_official_pp(source, seed=1)
    target = AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True)
    report = load_official_checkpoint(target, official)
    assert report.ok
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    again = export_official_state_dict(target)
    assert sorted(again) == sorted(official) and all(torch.equal(again[k], official[k]) for k in official)


def test_import_into_own_ln3_keeps_the_official_function() -> None:
    """norm3 := norm2 on import, so our default wiring computes what the official forward does."""
    source = AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True).eval()
    official = _random_official_pp(source, seed=2)
    own_ln3 = AudioMAEPlusPlus(**TINY_PP).eval()
    load_official_checkpoint(own_ln3, official)
    x = torch.randn(2, 1, 16, 32)
    torch.testing.assert_close(own_ln3.forward_features(x), source.forward_features(x))
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(own_ln3(x, generator=generator())[1], source(x, generator=generator())[1])
    # ... and exports back, since its norm3 still equals norm2
    assert all(torch.equal(v, official[k]) for k, v in export_official_state_dict(own_ln3).items() if "norm3" not in k)


def official_pp_features(state: dict[str, torch.Tensor], x: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    """The official AudioMAE++ encoder forward, written from its equations over its own key names.

    Hand-written softmax attention and FFN2 fed by norm2, as in the official code.
    """
    f = torch.nn.functional

    def linear(prefix, h):
        return f.linear(h, state[f"{prefix}.weight"], state[f"{prefix}.bias"])

    def norm(prefix, h):
        return f.layer_norm(h, h.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"], eps=1e-6)

    h = f.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=(4, 16))
    h = h.flatten(2).transpose(1, 2) + state["encoder.pos_embed"][:, 1:]
    cls = state["cls_token"] + state["encoder.pos_embed"][:, :1]
    h = torch.cat([cls.expand(h.shape[0], -1, -1), h], dim=1)
    b, n, d = h.shape
    for i in range(depth):
        p = f"encoder.blocks.{i}"
        h = h + 0.5 * linear(f"{p}.ffn1.layer2", f.silu(linear(f"{p}.ffn1.layer1", norm(f"{p}.norm1", h))))
        q, k, v = linear(f"{p}.attn.qkv_layer", norm(f"{p}.norm2", h)).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
        h = h + linear(f"{p}.attn.proj_layer", (attention @ v).transpose(1, 2).reshape(b, n, d))
        inner = norm(f"{p}.norm2", h)  # the official forward reuses norm2 here
        gated = f.silu(linear(f"{p}.ffn2.linear2", inner)) * linear(f"{p}.ffn2.linear1", inner)
        h = h + linear(f"{p}.ffn2.project", norm(f"{p}.ffn2.ln", gated))
    return norm("encoder.encoder_norm", h)


@pytest.mark.parametrize("share", [True, False])
def test_imported_weights_compute_the_official_forward(share: bool) -> None:
    official = _random_official_pp(AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True), seed=4)
    for key in [k for k in official if "norm3" in k]:  # the official norm3 is never read: make that visible
        official[key] = torch.full_like(official[key], 7.0)
    model = AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=share).eval()
    load_official_checkpoint(model, official)
    x = torch.randn(2, 1, 16, 32)
    torch.testing.assert_close(model.forward_features(x), official_pp_features(official, x, depth=2, heads=2), atol=1e-5, rtol=1e-4)


def test_export_refuses_what_the_official_code_cannot_express() -> None:
    model = AudioMAEPlusPlus(**TINY_PP)
    torch.nn.init.normal_(model.blocks[0].norm3.weight)
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.0\.norm3\.weight differs"):
        export_official_state_dict(model)
    with pytest.raises(CheckpointMismatchError, match="use_rope"):
        export_official_state_dict(AudioMAEPlusPlus(**TINY_PP, use_rope=True))


def test_mismatches_are_reported_by_name(tmp_path: Path) -> None:
    model = AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True)
    official = export_official_state_dict(model)
    del official["encoder.blocks.1.attn.qkv_layer.weight"]
    official["encoder.blocks.1.extra.weight"] = torch.zeros(3)
    official["decoder.decoder_pred.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointMismatchError) as error:
        load_official_checkpoint(AudioMAEPlusPlus(**TINY_PP), official)
    message = str(error.value)
    assert "blocks.1.attn.qkv.weight" in message  # missing, in our naming
    assert "blocks.1.extra.weight" in message  # unexpected
    assert "decoder_pred.bias: checkpoint [5] vs model [64]" in message
    target = AudioMAEPlusPlus(**TINY_PP)
    kept_bias = target.decoder_pred.bias.detach().clone()
    report = load_official_checkpoint(target, official, strict=False)
    assert report.missing == ["blocks.1.attn.qkv.weight"] and report.unexpected == ["blocks.1.extra.weight"]
    assert report.shape_mismatches == {"decoder_pred.bias": ([5], [64])}  # by key, not by message text
    assert torch.equal(target.decoder_pred.bias, kept_bias)  # a mis-shaped key is left alone

    # files: training checkpoints wrap the weights and may carry DDP's "module." prefix
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {f"module.{k}": v for k, v in export_official_state_dict(model).items()}, "epoch": 3}, path)
    assert load_official_checkpoint(AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True), path).ok
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_official_checkpoint(model, tmp_path / "missing.pth")
    torn = tmp_path / "torn.pth"
    torn.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointMismatchError, match="cannot load checkpoint .*torn.pth") as error:
        load_official_checkpoint(model, torn)
    assert "weights_only" not in str(error.value)


def test_encoder_only_import_skips_an_unknown_decoder() -> None:
    """AudioMAE's released AS-2M checkpoint has a Swin decoder: take its encoder only."""
    source = AudioMAE(**TINY_BASE)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    state["decoder_blocks.0.0.attn.relative_position_bias_table"] = torch.zeros(3, 16)  # a Swin decoder key
    target = AudioMAE(**TINY_BASE)
    report = load_official_checkpoint(target, state, decoder=False)
    assert report.ok, report.describe()
    assert torch.equal(target.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)


def test_fine_tuned_classifier_round_trips_through_the_official_layout() -> None:
    torch.manual_seed(5)
    source = AudioMAEClassifier(AudioMAE(**TINY_BASE), num_classes=4).eval()
    torch.nn.init.normal_(source.head.weight)
    exported = export_official_state_dict(source)
    assert detect_layout(exported) == "audiomae_finetuned"
    assert not any(k.startswith(("norm.", "decoder", "mask_token")) for k in exported)
    target = AudioMAEClassifier(AudioMAE(**TINY_BASE), num_classes=4).eval()
    assert load_official_checkpoint(target, exported).ok
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize("use_rope", [False, True])
def test_our_pretraining_checkpoint_loads_into_a_classifier(use_rope: bool) -> None:
    """The pretrain -> fine-tune hand-over of the emitted script: encoder in, decoder out, head new."""
    pretrained = AudioMAEPlusPlus(**TINY_PP, use_rope=use_rope)
    classifier = AudioMAEClassifier(AudioMAEPlusPlus(**TINY_PP, use_rope=use_rope), num_classes=5)
    report = load_official_checkpoint(classifier, pretrained.state_dict())
    assert report.ok, report.describe()
    assert sorted(report.fresh) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert any("decoder_blocks.0" in line for line in report.dropped)
    assert torch.equal(classifier.encoder.blocks[1].ffn2.fc2.weight, pretrained.blocks[1].ffn2.fc2.weight)


def test_encoder_only_import_ignores_a_different_decoder_and_a_classifier_head() -> None:
    source = AudioMAE(**{**TINY_BASE, "decoder_embed_dim": 48})
    target = AudioMAE(**TINY_BASE)
    with pytest.raises(CheckpointMismatchError, match="decoder_embed.weight: checkpoint"):
        load_official_checkpoint(target, source.state_dict())
    report = load_official_checkpoint(target, source.state_dict(), decoder=False)
    assert report.ok and any("decoder_embed.weight" in line for line in report.dropped)
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)

    # a fine-tuned official checkpoint into an autoencoder: encoder in, head out, `norm` named missing
    classifier = AudioMAEClassifier(AudioMAE(**TINY_BASE), num_classes=3)
    finetuned = export_official_state_dict(classifier)
    report = load_official_checkpoint(AudioMAE(**TINY_BASE), finetuned, strict=False, decoder=False)
    assert report.layout == "audiomae_finetuned" and report.missing == ["norm.bias", "norm.weight"]
    assert any(line.startswith("head.weight") for line in report.dropped)


def official_vit_features(state: dict[str, torch.Tensor], x: torch.Tensor, depth: int, heads: int, patch: int) -> torch.Tensor:
    """AudioMAE's (timm ViT) encoder forward over its own key names: pre-norm blocks, GELU MLP."""
    f = torch.nn.functional

    def linear(prefix, h):
        return f.linear(h, state[f"{prefix}.weight"], state[f"{prefix}.bias"])

    def norm(prefix, h):
        return f.layer_norm(h, h.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"], eps=1e-6)

    h = f.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch)
    h = h.flatten(2).transpose(1, 2) + state["pos_embed"][:, 1:]
    h = torch.cat([(state["cls_token"] + state["pos_embed"][:, :1]).expand(h.shape[0], -1, -1), h], dim=1)
    b, n, d = h.shape
    for i in range(depth):
        p = f"blocks.{i}"
        q, k, v = linear(f"{p}.attn.qkv", norm(f"{p}.norm1", h)).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
        h = h + linear(f"{p}.attn.proj", (attention @ v).transpose(1, 2).reshape(b, n, d))
        h = h + linear(f"{p}.mlp.fc2", f.gelu(linear(f"{p}.mlp.fc1", norm(f"{p}.norm2", h))))
    return norm("norm", h)


def test_baseline_computes_the_official_vit_forward_with_the_official_position_table() -> None:
    torch.manual_seed(6)
    model = AudioMAE(**{**TINY_BASE, "img_size": (64, 32)}).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key, value in state.items():
        if value.is_floating_point() and key not in ("pos_embed", "decoder_pos_embed"):
            state[key] = torch.randn_like(value) * 0.2
    state["pos_embed"] = official_audiomae_pos_embed(32, (8, 4))
    load_official_checkpoint(model, state)
    x = torch.randn(2, 1, 64, 32)
    reference = official_vit_features(state, x, depth=2, heads=2, patch=8)
    torch.testing.assert_close(model.forward_features(x), reference, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- the official computation
@pytest.mark.parametrize(
    "name,kwargs,shape",
    [
        ("audiomae++", dict(preset="tiny", share_ffn2_norm=True, img_size=(32, 32), depth=2, decoder_depth=1), (2, 1, 32, 32)),
        ("baseline", dict(preset="tiny", img_size=(64, 32), decoder_depth=2), (2, 1, 64, 32)),
    ],
    ids=["audiomae++", "baseline"],
)
def test_exported_weights_compute_the_same_step_in_the_official_computation(name: str, kwargs: dict, shape: tuple) -> None:
    """bench/official_restated.py restates the official modules; loaded with our export
    (strict on every key but the unused norm3), it gives our loss and prediction for the
    same mask. This is what makes bench/models.py's side-by-side rows compare equal math."""
    from bench.official_restated import restate

    torch.manual_seed(0)
    model = model_registry.create(name, **kwargs).train()
    for param in model.parameters():  # away from the zero/one init so every weight matters
        if param.requires_grad:
            torch.nn.init.normal_(param, std=0.05)
    official = restate(model)
    x = torch.randn(*shape)
    mask, ids_restore, ids_keep = model.sample_mask(shape[0], model.mask_ratio, x.device, torch.Generator().manual_seed(1))
    pred = model.forward_decoder(model.encode_tokens(x, ids_keep), ids_restore)
    loss = model.reconstruction_loss(x, pred, mask)
    official_loss, official_pred, _ = official(x, ids_keep, ids_restore, mask)
    torch.testing.assert_close(official_pred, pred, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(official_loss, loss, atol=1e-6, rtol=1e-5)
