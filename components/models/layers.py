"""Transformer building blocks shared by the catalog's models (timm-style, small and uniform).

Token order everywhere is time-major: patch ``(t, f)`` of a ``(T', F')`` grid is token
``t * F' + f``. Attention uses a fused qkv projection and ``F.scaled_dot_product_attention``
(flash / memory-efficient kernels on GPU), except in bf16/fp16 on CPU, where two batched
matmuls beat PyTorch's CPU flash kernel at these sequence lengths (``explicit_attention``). Rotary embeddings are 2-D axial and take each
token's *original* grid position, so masking (which drops and shuffles tokens) keeps positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PatchEmbed",
    "sincos_embed_1d",
    "sincos_pos_embed_1d",
    "sincos_pos_embed_2d",
    "grid_positions",
    "RotaryEmbedding2D",
    "apply_rotary",
    "Attention",
    "explicit_attention",
    "Mlp",
    "SwiGLU",
    "swiglu_hidden_features",
    "DropPath",
    "drop_path_rates",
    "LayerScale",
    "Block",
    "MacaronBlock",
    "init_vit_weights",
]

LAYER_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    """``[B, C, T, F]`` -> ``[B, N, D]`` with non-overlapping ``(pt, pf)`` patches (a strided conv).

    Tokens come out time-major (the conv's ``[B, D, T', F']`` output flattened row by row).
    """

    def __init__(
        self,
        img_size: tuple[int, int],
        patch_size: tuple[int, int],
        in_chans: int,
        embed_dim: int,
    ) -> None:
        super().__init__()
        self.img_size = tuple(img_size)
        self.patch_size = tuple(patch_size)
        self.grid_size = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def sincos_embed_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Fixed sine-cosine code ``[len(positions), embed_dim]``: sines in the first half, cosines in the second."""
    if embed_dim % 2:
        raise ValueError(
            f"sin-cos position embeddings need an even dimension, got {embed_dim}"
        )
    omega = torch.arange(
        embed_dim // 2, dtype=torch.float64, device=positions.device
    ) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_pos_embed_1d(
    embed_dim: int, length: int, cls_token: bool = True
) -> torch.Tensor:
    """``[1, (1 +) length, D]`` 1-D table; the CLS row (if any) is zeros, as in MAE."""
    table = sincos_embed_1d(embed_dim, torch.arange(length, dtype=torch.float64))
    if cls_token:
        table = torch.cat([torch.zeros(1, embed_dim), table], dim=0)
    return table.unsqueeze(0)


def sincos_pos_embed_2d(
    embed_dim: int, grid_size: tuple[int, int], cls_token: bool = True
) -> torch.Tensor:
    """``[1, (1 +) T'*F', D]`` 2-D table for a time-major ``(T', F')`` grid; CLS row zeros.

    As in MAE, the first half of the channels encodes the column (frequency) index and the
    second half the row (time) index, so tables match the official AudioMAE++ ones.
    """
    if embed_dim % 4:
        raise ValueError(
            f"2-D sin-cos position embeddings need a dimension divisible by 4, got {embed_dim}"
        )
    rows, cols = torch.meshgrid(
        torch.arange(grid_size[0], dtype=torch.float64),
        torch.arange(grid_size[1], dtype=torch.float64),
        indexing="ij",
    )
    table = torch.cat(
        [sincos_embed_1d(embed_dim // 2, cols), sincos_embed_1d(embed_dim // 2, rows)],
        dim=1,
    )
    if cls_token:
        table = torch.cat([torch.zeros(1, embed_dim), table], dim=0)
    return table.unsqueeze(0)


def grid_positions(grid_size: tuple[int, int]) -> torch.Tensor:
    """``[T'*F', 2]`` float (time, frequency) coordinates of the time-major tokens."""
    rows, cols = torch.meshgrid(
        torch.arange(grid_size[0]), torch.arange(grid_size[1]), indexing="ij"
    )
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float()


class RotaryEmbedding2D(nn.Module):
    """2-D axial rotary position embedding over (time, frequency) coordinates.

    A head of size ``hd`` is split into ``hd/2`` rotation pairs ``(i, i + hd/2)``; the first
    ``hd/4`` pairs turn with the time coordinate, the others with the frequency coordinate, at
    geometric frequencies ``theta^(-2j/(hd/2))``. Because ``<R(a) q, R(b) k> = <q, R(b - a) k>``,
    attention scores depend only on position *differences*. Positions are passed in per token,
    so tokens keep their original grid position however masking reorders them.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(
                f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}; change embed_dim/num_heads"
            )
        axis_pairs = head_dim // 4
        inv_freq = 1.0 / theta ** (
            torch.arange(axis_pairs, dtype=torch.float32) / axis_pairs
        )
        self.head_dim = head_dim
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions [B, K, 2]`` (or ``[K, 2]``) -> ``(cos, sin)`` each ``[B, 1, K, hd]`` in float32."""
        if positions.dim() == 2:
            positions = positions.unsqueeze(0)
        inv_freq = self.inv_freq.to(positions.device)
        angles = torch.cat(
            [
                positions[..., 0:1].float() * inv_freq,
                positions[..., 1:2].float() * inv_freq,
            ],
            dim=-1,
        )  # [B, K, hd/2]
        angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(i, i + hd/2)`` of ``x [B, H, K, hd]`` by the given angles (kept in x's dtype)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """``softmax(q kᵀ / √d) v`` as two batched matmuls.

    Used for bf16/fp16 on CPU: there PyTorch's fused (flash) kernel is slower than two bf16
    GEMMs at MAE sizes (50-260 tokens, head dim 32-64), enough to make a whole training step
    1.1-1.2x slower (``bench/models.py`` rows ``fused`` vs ``ours``). Same math as ``F.scaled_dot_product_attention``. The scale goes on
    k (``hd x N``, not the ``N x N`` scores); the CPU softmax kernel computes in float32 for
    bf16/fp16 input and rounds once, as a float32 softmax cast back would (within 1 ulp).
    """
    scores = q @ (k.transpose(-2, -1) * q.shape[-1] ** -0.5)
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    return probs @ v


class Attention(nn.Module):
    """Multi-head self-attention, fused qkv, ``scaled_dot_product_attention``, optional RoPE.

    bf16/fp16 activations on CPU (autocast) take ``explicit_attention`` instead of the fused
    kernel, which is slower there; float32 and every GPU dtype use the fused kernel.

    ``rope=(cos, sin)`` rotates q and k of every token after the first ``num_prefix_tokens``
    (the CLS token has no grid position and stays unrotated).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"embedding dimension {dim} is not divisible by num_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        num_prefix_tokens: int = 1,
    ) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (
            self.qkv(x)
            .reshape(b, n, 3, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        if rope is not None:
            cos, sin = rope
            p = num_prefix_tokens
            q = torch.cat([q[:, :, :p], apply_rotary(q[:, :, p:], cos, sin)], dim=2)
            k = torch.cat([k[:, :, :p], apply_rotary(k[:, :, p:], cos, sin)], dim=2)
        dropout_p = self.attn_drop if self.training else 0.0
        if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
            x = explicit_attention(q, k, v, dropout_p)
        else:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, d)))


class Mlp(nn.Module):
    """Two-layer feed-forward ``d -> hidden -> d`` with GELU (ViT) or SiLU (Macaron FFN1)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        act: str = "gelu",
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        if act not in ("gelu", "silu"):
            raise ValueError(f"Mlp act must be 'gelu' or 'silu', got {act!r}")
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU() if act == "gelu" else nn.SiLU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def swiglu_hidden_features(dim: int) -> int:
    """AudioMAE++'s SwiGLU width ``int(8 d / 3)`` (192->512, 384->1024, 768->2048, 1024->2730).

    Integer arithmetic, so no float rounding can move it by one.
    """
    return (8 * dim) // 3


class SwiGLU(nn.Module):
    """SwiGLU FFN as in AudioMAE++: ``fc2(LN(SiLU(fc1_g x) * fc1_x x))``, LN over the hidden width."""

    def __init__(
        self, in_features: int, hidden_features: int | None = None, drop: float = 0.0
    ) -> None:
        super().__init__()
        hidden = (
            swiglu_hidden_features(in_features)
            if hidden_features is None
            else hidden_features
        )
        self.fc1_x = nn.Linear(in_features, hidden)  # value
        self.fc1_g = nn.Linear(in_features, hidden)  # gate
        self.norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.fc2 = nn.Linear(hidden, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.fc1_g(x)) * self.fc1_x(x)
        return self.drop(self.fc2(self.norm(self.drop(hidden))))


class DropPath(nn.Module):
    """Stochastic depth: zero a whole residual branch per sample with probability ``drop_prob``.

    Always present in blocks (identity at 0) so a classifier can set the rate after building.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """Stochastic depth per block, rising linearly from 0 at the first to ``drop_path_rate`` at the last."""
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    return [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT); ``init_values`` e.g. 1e-5."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _layer_scale(dim: int, init_values: float | None) -> nn.Module:
    return LayerScale(dim, init_values) if init_values else nn.Identity()


class Block(nn.Module):
    """Pre-norm ViT block: ``x + Attn(LN1 x)`` then ``x + FFN(LN2 x)`` (FFN: GELU MLP or SwiGLU)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        init_values: float | None = None,
        use_swiglu: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = _layer_scale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = (
            SwiGLU(dim) if use_swiglu else Mlp(dim, int(dim * mlp_ratio), act="gelu")
        )
        self.ls2 = _layer_scale(dim, init_values)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), rope=rope)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class MacaronBlock(nn.Module):
    """AudioMAE++ block: ``x + ½ FFN1(LN1 x)`` -> ``x + Attn(LN2 x)`` -> ``x + FFN2(LN3 x)``.

    FFN1 is a SiLU MLP ``d -> mlp_ratio·d -> d``; FFN2 is SwiGLU (or a SiLU MLP without it).
    The official code builds ``norm3`` but feeds FFN2 with ``norm2``; that leaves a parameter
    without gradient (DDP then needs ``find_unused_parameters``). Ours gives FFN2 its own LN3;
    ``share_ffn2_norm=True`` reproduces the official wiring (and has no ``norm3``) for loading
    official weights.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        init_values: float | None = None,
        use_swiglu: bool = True,
        share_ffn2_norm: bool = False,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ffn1 = Mlp(dim, hidden, act="silu")
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = _layer_scale(dim, init_values)
        self.share_ffn2_norm = share_ffn2_norm
        self.norm3 = None if share_ffn2_norm else nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ffn2 = SwiGLU(dim) if use_swiglu else Mlp(dim, hidden, act="silu")
        self.ls2 = _layer_scale(dim, init_values)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = x + 0.5 * self.drop_path(self.ffn1(self.norm1(x)))
        x = x + self.drop_path(self.ls1(self.attn(self.norm2(x), rope=rope)))
        norm3 = self.norm2 if self.norm3 is None else self.norm3
        return x + self.drop_path(self.ls2(self.ffn2(norm3(x))))


def init_vit_weights(module: nn.Module) -> None:
    """MAE initialisation: xavier-uniform linears with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, PatchEmbed):
        # treat the conv like a linear layer over the flattened patch, as MAE does
        weight = module.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(module.proj.bias)
