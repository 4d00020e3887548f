"""The official models' training computation, restated for side-by-side timing and checking.

``bench/models.py`` times the catalog's models against these. They compute what the official
code computes, module for module and in its state-dict layout (so
``components.models.official_weights.export_official_state_dict`` loads into them with
``strict=True``), written here from reading the official sources:

* ``OfficialAudioMAEPlusPlus``: SarthakYadav/audiomae-plusplus-official ``src/models/``
  (``mae_pp.py``, ``mae_common.py``, ``transformerpp.py``, ``layers.py``): Transformer++
  blocks with a SiLU FFN1, hand-written softmax attention (``qkv_layer``/``proj_layer``),
  ``norm3`` built but FFN2 fed through ``norm2``, SwiGLU FFN2 (``linear1`` value,
  ``linear2`` gate, ``ln``, ``project``); encoder and decoder as ``encoder.*``/``decoder.*``.
* ``OfficialAudioMAE``: facebookresearch/AudioMAE ``models_mae.py`` with timm's ViT ``Block``
  (hand-written attention, GELU MLP), global decoder.

Both take ``(x, ids_keep, ids_restore, mask)`` so a check can feed them the catalog model's
own mask; ``random_masking`` is the official recipe (uniform noise, argsort) for timing.
Only the configurations the benches use are restated: additive sin-cos positions (no RoPE),
CLS token, no dropout or drop-path, plain (not per-patch normalised) MSE on masked patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


def random_masking(batch: int, tokens: int, mask_ratio: float, device: torch.device):
    """The official recipe: keep the ``int(N (1 - ratio))`` tokens of lowest uniform noise."""
    keep = int(tokens * (1 - mask_ratio))
    ids_shuffle = torch.argsort(torch.rand(batch, tokens, device=device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, tokens, device=device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore)


class HandWrittenAttention(nn.Module):
    """Fused qkv projection, ``softmax(q k^T * scale) v`` written out, output projection."""

    def __init__(self, dim: int, num_heads: int, qkv_name: str, proj_name: str) -> None:
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv_name, self.proj_name = qkv_name, proj_name
        setattr(self, qkv_name, nn.Linear(dim, dim * 3, bias=True))
        setattr(self, proj_name, nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = getattr(self, self.qkv_name)(x)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return getattr(self, self.proj_name)((attn @ v).transpose(1, 2).reshape(b, n, c))


class TwoLayerMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: type[nn.Module], names: tuple[str, str]) -> None:
        super().__init__()
        self.names = names
        setattr(self, names[0], nn.Linear(dim, hidden))
        self.act = act()
        setattr(self, names[1], nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.names[1])(self.act(getattr(self, self.names[0])(x)))


class SwiGLUFFN(nn.Module):
    """``project(ln(silu(linear2 x) * linear1 x))`` with hidden width ``int(4 d (2/3))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = int(4 * dim * (2 / 3))
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(dim, hidden)
        self.ln = nn.LayerNorm(hidden, eps=EPS)
        self.project = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.ln(F.silu(self.linear2(x)) * self.linear1(x)))


class TransformerPlusPlusBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.ffn1 = TwoLayerMlp(dim, int(dim * mlp_ratio), nn.SiLU, ("layer1", "layer2"))
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.attn = HandWrittenAttention(dim, num_heads, "qkv_layer", "proj_layer")
        self.norm3 = nn.LayerNorm(dim, eps=EPS)  # built, never used: the official quirk
        self.ffn2 = SwiGLUFFN(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ffn1(self.norm1(x)) * 0.5
        x = x + self.attn(self.norm2(x))
        return x + self.ffn2(self.norm2(x))


class VitBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = HandWrittenAttention(dim, num_heads, "qkv", "proj")
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = TwoLayerMlp(dim, int(dim * mlp_ratio), nn.GELU, ("fc1", "fc2"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: tuple[int, int], in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def unshuffle_with_mask_tokens(x: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """``[cls, kept...]`` -> ``[cls, all tokens in grid order]`` with mask tokens in the gaps."""
    mask_tokens = mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
    x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
    x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
    return torch.cat([x[:, :1, :], x_], dim=1)


def patchify(x: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    b, c, t, f = x.shape
    pt, pf = patch_size
    x = x.reshape(b, c, t // pt, pt, f // pf, pf)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (t // pt) * (f // pf), pt * pf * c)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def encode(x, ids_keep, cls_token, pos_embed, blocks, norm):
    """Add positions, keep ``ids_keep``, prepend the CLS token, run the blocks, normalise."""
    x = x + pos_embed[:, 1:, :]
    x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, x.shape[-1]))
    cls = (cls_token + pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
    x = torch.cat((cls, x), dim=1)
    for block in blocks:
        x = block(x)
    return norm(x)


def decode(x, ids_restore, embed, mask_token, pos_embed, blocks, norm, pred):
    """Embed, fill in mask tokens in grid order, add positions, run the blocks, predict; no CLS."""
    x = unshuffle_with_mask_tokens(embed(x), mask_token, ids_restore) + pos_embed
    for block in blocks:
        x = block(x)
    return pred(norm(x))[:, 1:, :]


class _Restated(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim, mask_ratio) -> None:
        super().__init__()
        self.patch_size, self.mask_ratio = tuple(patch_size), mask_ratio
        self.num_tokens = (img_size[0] // patch_size[0]) * (img_size[1] // patch_size[1])
        self.patch_embed = PatchEmbed(self.patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))

    def forward(self, x, ids_keep=None, ids_restore=None, mask=None):
        """``(loss, pred, mask)``; the official random masking unless a mask is given."""
        tokens = self.patch_embed(x)
        if ids_keep is None:
            ids_keep, ids_restore, mask = random_masking(x.shape[0], tokens.shape[1], self.mask_ratio, x.device)
        latent = self.encode(tokens, ids_keep)
        pred = self.decode(latent, ids_restore)
        return masked_mse(pred, patchify(x, self.patch_size), mask), pred, mask


class OfficialAudioMAEPlusPlus(_Restated):
    def __init__(self, *, img_size=(200, 80), patch_size=(4, 16), in_chans=1, embed_dim=192, depth=12,
                 num_heads=3, decoder_embed_dim=384, decoder_depth=4, decoder_num_heads=8, mlp_ratio=4.0,
                 mask_ratio=0.8) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim, mask_ratio)
        tokens = self.num_tokens
        self.encoder = nn.Module()
        self.encoder.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, embed_dim), requires_grad=False)
        self.encoder.blocks = nn.ModuleList(TransformerPlusPlusBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.encoder.encoder_norm = nn.LayerNorm(embed_dim, eps=EPS)
        self.decoder = nn.Module()
        self.decoder.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.decoder.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder.decoder_pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, decoder_embed_dim), requires_grad=False)
        self.decoder.decoder_blocks = nn.ModuleList(
            TransformerPlusPlusBlock(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)
        )
        self.decoder.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=EPS)
        self.decoder.decoder_pred = nn.Linear(decoder_embed_dim, patch_size[0] * patch_size[1] * in_chans)

    def encode(self, x, ids_keep):
        enc = self.encoder
        return encode(x, ids_keep, self.cls_token, enc.pos_embed, enc.blocks, enc.encoder_norm)

    def decode(self, x, ids_restore):
        dec = self.decoder
        return decode(x, ids_restore, dec.decoder_embed, dec.mask_token, dec.decoder_pos_embed,
                      dec.decoder_blocks, dec.decoder_norm, dec.decoder_pred)


class OfficialAudioMAE(_Restated):
    def __init__(self, *, img_size=(1024, 128), patch_size=(16, 16), in_chans=1, embed_dim=768, depth=12,
                 num_heads=12, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0,
                 mask_ratio=0.8) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim, mask_ratio)
        tokens = self.num_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(VitBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=EPS)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            VitBlock(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=EPS)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size[0] * patch_size[1] * in_chans)

    def encode(self, x, ids_keep):
        return encode(x, ids_keep, self.cls_token, self.pos_embed, self.blocks, self.norm)

    def decode(self, x, ids_restore):
        return decode(x, ids_restore, self.decoder_embed, self.mask_token, self.decoder_pos_embed,
                      self.decoder_blocks, self.decoder_norm, self.decoder_pred)


def restate(model: nn.Module) -> _Restated:
    """The official counterpart of a catalog ``audiomae++``/``baseline`` model, same weights.

    The catalog model must use the official configuration: additive sin-cos positions, CLS,
    and for AudioMAE++ Macaron + SwiGLU blocks (its own LN3 is dropped on export; the
    restatement feeds FFN2 through norm2 as the official code does, so compare against a
    catalog model built with ``share_ffn2_norm=True``).
    """
    from components.models.official_weights import export_official_state_dict

    common = dict(
        img_size=tuple(model.img_size), patch_size=tuple(model.patch_size), in_chans=model.in_chans,
        embed_dim=model.cls_token.shape[-1], depth=len(model.blocks), num_heads=model.num_heads,
        decoder_embed_dim=model.mask_token.shape[-1], decoder_depth=len(model.decoder_blocks),
        decoder_num_heads=model.decoder_blocks[0].attn.num_heads, mlp_ratio=model.mlp_ratio,
        mask_ratio=model.mask_ratio,
    )
    restated = OfficialAudioMAEPlusPlus(**common) if model.use_macaron else OfficialAudioMAE(**common)
    state = export_official_state_dict(model)
    restated_keys = set(restated.state_dict())
    # an exported own-LN3 model carries norm3 weights the official blocks hold (unused) too
    restated.load_state_dict({k: v for k, v in state.items() if k in restated_keys}, strict=False)
    missing = restated_keys - set(state)
    if missing - {k for k in restated_keys if ".norm3." in k}:
        raise KeyError(f"the export lacks {sorted(missing)[:5]}")
    return restated.to(next(model.parameters()).device).train(model.training)
