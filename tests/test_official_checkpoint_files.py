"""Checkpoint files as the official training code writes them, read safely.

``misc.save_model`` in facebookresearch/AudioMAE (util/misc.py) and in
SarthakYadav/audiomae-plusplus-official (src/misc.py) saves
``{"model", "optimizer", "epoch", "scaler", "args"}`` with ``args`` an ``argparse.Namespace``;
AudioMAE's submitit_pretrain.py (the launcher of its AS-2M pre-training) stores
``pathlib.PosixPath`` folders in it, AudioMAE++'s train_mae_spec.py its ``ml_collections.ConfigDict``
as ``args.config``. ``load_official_checkpoint`` reads them with ``torch.load(weights_only=True)``
and an allow-list of exactly those three classes; anything else is refused before it is built.
The fake ``ConfigDict`` below pickles to the same bytes as ml_collections 1.1.0's for the same
values (compared once, by hand), without the package being installed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from pathlib import Path, PurePosixPath

import pytest
import torch

from components.models import AudioMAE, AudioMAEPlusPlus
from components.models.official_weights import (
    CheckpointMismatchError,
    OfficialConfigDict,
    convert_to_ours,
    export_official_state_dict,
    load_official_checkpoint,
    official_audiomae_pos_embed,
    read_official_checkpoint,
)

torch.set_num_threads(1)
TINY_BASE = dict(preset="tiny", img_size=(32, 32), patch_size=(8, 8), embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
TINY_PP = dict(preset="tiny", img_size=(16, 32), embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
DECODER = re.compile(r"^(decoder_|mask_token)")


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_(std=0.2)
    return model


def official_args(**extra: object) -> argparse.Namespace:
    """``args`` as submitit_pretrain.py hands it to main_pretrain.py: flags, its folders as paths, ranks."""
    folder = Path("/checkpoint/user/experiments/419909")
    return argparse.Namespace(
        batch_size=8, epochs=33, accum_iter=1, model="mae_vit_base_patch16", input_size=224, mask_ratio=0.8,
        norm_pix_loss=True, weight_decay=0.0001, lr=0.0002, blr=0.0002, min_lr=0.0, warmup_epochs=3,
        data_path="/datasets01/imagenet_full_size/061417/", output_dir=folder, log_dir=folder, job_dir=folder.parent / "%j",
        ngpus=8, nodes=8, timeout=4320, partition="learnlab", use_volta32=True, comment="",
        device="cuda", seed=0, resume="", start_epoch=0, num_workers=10, pin_mem=True, world_size=64,
        local_rank=-1, dist_on_itp=False, dist_url="env://", audio_exp=True, freqm=0, timem=0, mixup=0.0,
        dataset="audioset", decoder_mode=1, mask_t_prob=0.7, mask_f_prob=0.3, mask_2d=False,
        rank=0, gpu=0, distributed=True, dist_backend="nccl", **extra,
    )


def training_file(path: Path, weights: dict[str, torch.Tensor], args: argparse.Namespace, **extra: object) -> Path:
    """A file in the official training layout: weights, AdamW state after a step, epoch, scaler, args."""
    params = [torch.nn.Parameter(t.detach().clone().float()) for t in weights.values() if t.is_floating_point()]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.05}], lr=1e-4, betas=(0.9, 0.95))
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 7}
    torch.save({"model": weights, "optimizer": optimizer.state_dict(), "epoch": 32, "scaler": scaler, "args": args, **extra}, path)
    return path


@pytest.fixture
def fake_ml_collections(monkeypatch: pytest.MonkeyPatch) -> type:
    """An ``ml_collections.config_dict.config_dict.ConfigDict`` that pickles like the real one."""
    module = types.ModuleType("ml_collections.config_dict.config_dict")

    class ConfigDict:
        def __init__(self, **fields: object) -> None:
            values = {k: ConfigDict(**v) if isinstance(v, dict) else v for k, v in fields.items()}
            self.__dict__.update(_fields=values, _locked=False, _type_safe=True, _convert_dict=True, _allow_dotted_keys=False, _sort_keys=True)

    ConfigDict.__module__ = module.__name__
    ConfigDict.__qualname__ = "ConfigDict"
    module.ConfigDict = ConfigDict
    for name in ("ml_collections", "ml_collections.config_dict"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return ConfigDict


def test_an_official_audiomae_training_file_loads_strict_and_clean(tmp_path: Path) -> None:
    source = randomised(AudioMAE(**TINY_BASE), seed=1)
    path = training_file(tmp_path / "checkpoint-32.pth", export_official_state_dict(source), official_args())
    with pytest.raises(Exception):  # plain weights_only loading refuses it: the allow-list is needed ...
        torch.load(path, weights_only=True)
    target = AudioMAE(**TINY_BASE)
    report = load_official_checkpoint(target, path)  # strict
    assert report.ok and report.layout == "audiomae" and not report.dropped, report.describe()
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    with pytest.raises(Exception):  # ... and it was only lent for that load, not left behind
        torch.load(path, weights_only=True)
    payload = read_official_checkpoint(path)
    assert type(payload["args"]) is argparse.Namespace and payload["args"].decoder_mode == 1
    folder = payload["args"].output_dir  # a pure path: no file-system methods came with the file
    assert type(folder) is PurePosixPath and folder == PurePosixPath("/checkpoint/user/experiments/419909")
    assert payload["epoch"] == 32 and payload["scaler"]["_growth_tracker"] == 7
    assert len(payload["optimizer"]["param_groups"]) == 2


def test_an_official_audiomae_pp_training_file_with_its_config_dict_loads(tmp_path: Path, fake_ml_collections: type) -> None:
    source = randomised(AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True), seed=2)
    config = fake_ml_collections(
        model={"arch": "mae_plusplus_tiny", "model_args": {"mask_ratio": 0.8, "img_size": (200, 80), "patch_size": (4, 16)}, "patch_embed_args": {}},
        opt={"learning_rate": 1.5e-4, "warmup_epochs": 10}, data={"train_dirs": ["a", "b"], "train_samples": [18988, 1766912]},
        batch_size=128, num_epochs=100,
    )
    args = argparse.Namespace(config=config, workdir="w", num_workers=4, no_wandb=False, resume="", start_epoch=0, min_lr=0.0, world_size=8,
                              gpu=0, rank=0, distributed=True, dist_backend="nccl", output_dir="w/checkpoints", steps_per_epoch=100,
                              warmup_epochs=10, epochs=100, accum_iter=1, clip_grad_value=None, lr=6e-4, global_bs=1024)
    path = training_file(tmp_path / "checkpoint-99.pth", export_official_state_dict(source), args)
    for name in [n for n in sys.modules if n.startswith("ml_collections")]:
        del sys.modules[name]  # the reader needs no ml_collections
    target = AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True)
    report = load_official_checkpoint(target, path)
    assert report.ok and report.layout == "audiomae++", report.describe()
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    config = read_official_checkpoint(path)["args"].config
    assert type(config) is OfficialConfigDict
    assert config._fields["model"]._fields["model_args"]._fields["img_size"] == (200, 80)


class Unexpected:
    """A class no checkpoint should hold."""


def _plant(marker: str) -> int:
    Path(marker).write_text("code from a checkpoint ran")
    return 0


class Planted:
    """Unpickling this would call ``_plant``: the classic code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_plant, (str(self.marker),))


@pytest.mark.parametrize("where", ["args", "top"])
def test_a_file_holding_anything_else_is_refused_without_running_it(tmp_path: Path, where: str) -> None:
    weights = export_official_state_dict(randomised(AudioMAE(**TINY_BASE), seed=3))
    marker = tmp_path / "marker"
    extra = {"payload": Planted(marker)} if where == "top" else {}
    args = official_args(**({"hook": Planted(marker)} if where == "args" else {}))
    planted = training_file(tmp_path / "planted.pth", weights, args, **extra)
    assert not marker.exists()
    with pytest.raises(CheckpointMismatchError) as error:
        load_official_checkpoint(AudioMAE(**TINY_BASE), planted)
    message = str(error.value)
    assert not marker.exists(), "the checkpoint's code ran"
    # one line naming exactly the refused global (not the allowed Namespace around it)
    assert "\n" not in message and f"planted.pth holds {__name__}._plant: refused unrun" in message, message
    assert "weights_only=False" not in message

    odd = training_file(tmp_path / "odd.pth", weights, official_args(note=Unexpected()))
    with pytest.raises(CheckpointMismatchError, match=rf"odd.pth holds {re.escape(__name__)}.Unexpected\b") as error:
        read_official_checkpoint(odd)
    assert "\n" not in str(error.value)


def _official_swin_decoder(dim: int, embed_dim: int, patch_values: int, tokens: int, heads: int = 16, meta: bool = False) -> dict[str, torch.Tensor]:
    """The released AS-2M checkpoint's local decoder (models_mae.py decoder_mode=1: 16 blocks of
    timm_patch/swin_transformer.py's SwinTransformerBlock), whose norm1/attn.qkv/attn.proj/mlp/norm2
    names and shapes coincide with a global decoder block's."""
    g = torch.Generator().manual_seed(9)
    r = (lambda *shape: torch.empty(*shape, device="meta")) if meta else (lambda *shape: torch.randn(*shape, generator=g))  # noqa: E731
    state = {"decoder_embed.weight": r(dim, embed_dim), "decoder_embed.bias": r(dim), "mask_token": r(1, 1, dim),
             "decoder_pos_embed": r(1, tokens, dim), "decoder_norm.weight": r(dim), "decoder_norm.bias": r(dim),
             "decoder_pred.weight": r(patch_values, dim), "decoder_pred.bias": r(patch_values)}
    for i in range(16):
        p = f"decoder_blocks.{i}."
        state |= {p + "norm1.weight": r(dim), p + "norm1.bias": r(dim), p + "attn.qkv.weight": r(3 * dim, dim), p + "attn.qkv.bias": r(3 * dim),
                  p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim), p + "attn.tau": r(heads),
                  p + "attn.meta_mlp.fc1.weight": r(384, 2), p + "attn.meta_mlp.fc1.bias": r(384),
                  p + "attn.meta_mlp.fc2.weight": r(heads, 384), p + "attn.meta_mlp.fc2.bias": r(heads),
                  p + "mlp.fc1.weight": r(4 * dim, dim), p + "mlp.fc1.bias": r(4 * dim), p + "mlp.fc2.weight": r(dim, 4 * dim),
                  p + "mlp.fc2.bias": r(dim), p + "norm2.weight": r(dim), p + "norm2.bias": r(dim)}
    return state


def _decoder_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if DECODER.match(k)}


@pytest.mark.parametrize("decoder_kind", ["swin", "global"])
def test_encoder_only_loading_leaves_every_decoder_tensor_bit_identical(tmp_path: Path, decoder_kind: str) -> None:
    """decoder=False: the model keeps its own decoder even where names and shapes coincide."""
    config = {**TINY_BASE, "img_size": (32, 32)}
    source = randomised(AudioMAE(**{**config, "img_size": (64, 32)}), seed=4)  # a longer (AudioSet-like) time grid
    weights = {k: v for k, v in export_official_state_dict(source).items() if not DECODER.match(k)}
    weights["pos_embed"] = official_audiomae_pos_embed(32, (8, 4))
    if decoder_kind == "swin":
        weights |= _official_swin_decoder(32, 32, 64, 1 + 8 * 4)
    else:  # a global decoder of exactly the target's shapes, other values
        weights |= _decoder_of(randomised(AudioMAE(**config), seed=5))
    path = training_file(tmp_path / "pretrained.pth", weights, official_args())
    target = AudioMAE(**config)
    own_decoder = _decoder_of(target)
    report = load_official_checkpoint(target, path, decoder=False)
    assert report.ok, report.describe()
    after = _decoder_of(target)
    assert after.keys() == own_decoder.keys() and all(torch.equal(after[k], v) for k, v in own_decoder.items())
    assert sum("(decoder, not loaded)" in line for line in report.dropped) == sum(1 for k in weights if DECODER.match(k))
    # the encoder came from the file (its position table cropped to the shorter grid, as AudioMAE does)
    assert torch.equal(target.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
    assert torch.equal(target.pos_embed, official_audiomae_pos_embed(32, (4, 4)))


def test_encoder_only_loading_keeps_an_audiomae_pp_decoder_too() -> None:
    source = randomised(AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True), seed=6)
    target = AudioMAEPlusPlus(**TINY_PP, share_ffn2_norm=True)
    own_decoder = _decoder_of(target)
    report = load_official_checkpoint(target, export_official_state_dict(source), decoder=False)
    assert report.ok, report.describe()
    assert all(torch.equal(_decoder_of(target)[k], v) for k, v in own_decoder.items())
    assert torch.equal(target.blocks[0].ffn2.fc2.weight, source.blocks[0].ffn2.fc2.weight)


def test_the_released_as2m_layout_fits_the_vit_b_of_the_esc50_spec_encoder_only() -> None:
    """Full size, on the meta device: the manifest's encoder keys at 1024x128 plus the 512-d Swin
    decoder, into the ViT-B at 512x128 of specs/esc50_finetune_official.yaml."""
    keys = json.loads((Path(__file__).parent / "data" / "model_official_audiomae_vitb_1024x128_global8.json").read_text())["keys"]
    state = {k: torch.empty(shape, device="meta") for k, shape in keys.items() if not DECODER.match(k)}
    state |= _official_swin_decoder(512, 768, 16 * 16, 513, meta=True)
    with torch.device("meta"):
        model = AudioMAE(preset="base", img_size=(512, 128), patch_size=(16, 16))
    with pytest.raises(CheckpointMismatchError, match="decoder_blocks.8.norm1.weight"):
        load_official_checkpoint(model, state)  # with its decoder: the Swin blocks do not fit
    converted, report = convert_to_ours(model, state, decoder=False)
    assert report.ok, report.describe()
    assert not any(DECODER.match(k) for k in converted) and converted["pos_embed"].shape == (1, 257, 768)
    assert sum("(decoder, not loaded)" in line for line in report.dropped) == 8 + 16 * 17
