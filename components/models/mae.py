"""The ViT masked autoencoder that both catalog models are made of.

``MaskedAutoencoderViT`` is AudioMAE's encoder-decoder with the block type, the FFN type and
the position scheme as switches: ``baseline`` (AudioMAE) uses pre-norm ViT blocks with GELU
MLPs and 2-D sin-cos tables in encoder and decoder; ``audiomae++`` uses Macaron blocks with
SwiGLU, a 2-D table in the encoder and a 1-D table in the decoder, or 2-D axial RoPE instead
of both tables. It is not registered itself: the registered subclasses give it their presets.

Parameter names follow the official AudioMAE (``patch_embed``, ``cls_token``, ``pos_embed``,
``blocks``, ``norm``, ``decoder_embed``, ``mask_token``, ``decoder_pos_embed``,
``decoder_blocks``, ``decoder_norm``, ``decoder_pred``), so its checkpoints load as they are.
The fixed sin-cos tables are persistent buffers: they are in the state dict (as in the
official checkpoints) but are not trainable parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from components.models.base import BaseAutoencoder
from components.models.layers import (
    LAYER_NORM_EPS,
    Block,
    MacaronBlock,
    PatchEmbed,
    RotaryEmbedding2D,
    drop_path_rates,
    grid_positions,
    init_vit_weights,
    sincos_pos_embed_1d,
    sincos_pos_embed_2d,
)

__all__ = ["MaskedAutoencoderViT"]

DECODER_MODULES = (
    "decoder_embed",
    "mask_token",
    "decoder_pos_embed",
    "decoder_blocks",
    "decoder_norm",
    "decoder_pred",
)


class MaskedAutoencoderViT(BaseAutoencoder):
    """ViT encoder over the kept tokens + light ViT decoder over all tokens (MAE)."""

    def __init__(
        self,
        *,
        img_size: tuple[int, int],
        patch_size: tuple[int, int],
        in_chans: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        decoder_embed_dim: int,
        decoder_depth: int,
        decoder_num_heads: int,
        mlp_ratio: float,
        mask_ratio: float,
        mask_mode: str,
        norm_pix_loss: bool,
        qkv_bias: bool,
        drop_path_rate: float,
        use_macaron: bool,
        use_swiglu: bool,
        share_ffn2_norm: bool,
        use_rope: bool,
        rope_theta: float,
        decoder_pos_embed_dims: int,
    ) -> None:
        super().__init__()
        self._init_geometry(
            img_size,
            patch_size,
            in_chans,
            embed_dim,
            mask_ratio,
            norm_pix_loss,
            mask_mode,
        )
        for size_name, size in (
            ("in_chans", in_chans),
            ("embed_dim", embed_dim),
            ("depth", depth),
            ("num_heads", num_heads),
            ("decoder_embed_dim", decoder_embed_dim),
            ("decoder_depth", decoder_depth),
            ("decoder_num_heads", decoder_num_heads),
        ):
            if size < 1:
                raise ValueError(
                    f"{type(self).__name__}: {size_name} must be >= 1, got {size}"
                )
        self.use_macaron = use_macaron
        self.use_swiglu = use_swiglu
        self.share_ffn2_norm = share_ffn2_norm
        self.use_rope = use_rope
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.depth = depth
        self.num_heads = num_heads

        # encoder
        self.patch_embed = PatchEmbed(
            self.img_size, self.patch_size, in_chans, embed_dim
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer(
            "pos_embed",
            None if use_rope else sincos_pos_embed_2d(embed_dim, self.grid_size),
        )
        self.blocks = nn.ModuleList(
            [
                self._make_block(embed_dim, num_heads, rate)
                for rate in drop_path_rates(drop_path_rate, depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)

        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        if use_rope:
            decoder_table = None
        elif decoder_pos_embed_dims == 2:
            decoder_table = sincos_pos_embed_2d(decoder_embed_dim, self.grid_size)
        else:
            decoder_table = sincos_pos_embed_1d(decoder_embed_dim, self.num_patches)
        self.register_buffer("decoder_pos_embed", decoder_table)
        self.decoder_blocks = nn.ModuleList(
            [
                self._make_block(decoder_embed_dim, decoder_num_heads, 0.0)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(
            decoder_embed_dim, self.patch_size[0] * self.patch_size[1] * in_chans
        )

        # rotary embeddings: one per head size; positions are the tokens' grid coordinates
        self.register_buffer(
            "token_positions", grid_positions(self.grid_size), persistent=False
        )
        self.rope = (
            RotaryEmbedding2D(embed_dim // num_heads, rope_theta) if use_rope else None
        )
        self.decoder_rope = (
            RotaryEmbedding2D(decoder_embed_dim // decoder_num_heads, rope_theta)
            if use_rope
            else None
        )

        self.apply(init_vit_weights)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def _make_block(self, dim: int, num_heads: int, drop_path: float) -> nn.Module:
        if self.use_macaron:
            return MacaronBlock(
                dim,
                num_heads,
                self.mlp_ratio,
                qkv_bias=self.qkv_bias,
                drop_path=drop_path,
                use_swiglu=self.use_swiglu,
                share_ffn2_norm=self.share_ffn2_norm,
            )
        return Block(
            dim,
            num_heads,
            self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            drop_path=drop_path,
            use_swiglu=self.use_swiglu,
        )

    # ---------------------------------------------------------------- encoder
    def encode_tokens(
        self, x: torch.Tensor, ids_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode the tokens ``ids_keep [B, K]`` (original indices; all when None): ``[B, 1+K, D]``.

        Positions travel with the tokens: the additive table is added before the subset is
        taken, and RoPE gets each kept token's original (time, frequency) coordinate.
        """
        self.check_input(x)
        tokens = self.patch_embed(x)
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed[:, 1:]
        positions = self.token_positions
        if ids_keep is not None:
            tokens = torch.gather(
                tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
            )
            positions = positions[ids_keep]
        cls = (
            self.cls_token
            if self.pos_embed is None
            else self.cls_token + self.pos_embed[:, :1]
        )
        x = torch.cat(
            [cls.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1
        )
        rope = self.rope(positions) if self.rope is not None else None
        for block in self.blocks:
            x = block(x, rope=rope)
        return self.norm(x)

    def forward_encoder(
        self,
        x: torch.Tensor,
        mask_ratio: float,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask, ids_restore, ids_keep = self.sample_mask(
            x.shape[0], mask_ratio, x.device, generator
        )
        return self.encode_tokens(x, ids_keep), mask, ids_restore

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_tokens(x, None)

    # ---------------------------------------------------------------- decoder
    def forward_decoder(
        self, latent: torch.Tensor, ids_restore: torch.Tensor
    ) -> torch.Tensor:
        if self.decoder_embed is None:
            raise RuntimeError(
                f"{type(self).__name__}: the decoder was removed (remove_decoder); only the encoder is usable"
            )
        x = self.decoder_embed(latent)
        b, kept_plus_cls, d = x.shape
        n = ids_restore.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(b, n + 1 - kept_plus_cls, d)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))
        x = torch.cat([x[:, :1], patches], dim=1)
        if self.decoder_pos_embed is not None:
            x = x + self.decoder_pos_embed
        rope = (
            self.decoder_rope(self.token_positions)
            if self.decoder_rope is not None
            else None
        )
        for block in self.decoder_blocks:
            x = block(x, rope=rope)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def remove_decoder(self) -> None:
        """Free the decoder (a fine-tuned classifier needs only the encoder; DDP then sees no unused parameters)."""
        for name in DECODER_MODULES:
            setattr(self, name, None)
        self.decoder_rope = None
