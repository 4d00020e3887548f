"""AudioMAE++ (Yadav et al.): a masked autoencoder with Macaron blocks and SwiGLU.

Faithful to the paper and to SarthakYadav/audiomae-plusplus-official where it is right:
Macaron blocks (``x + ½ FFN1``, attention, ``x + FFN2``) with a SiLU FFN1 and a SwiGLU FFN2
(LayerNorm over its ``int(8d/3)`` hidden width) in encoder and decoder, a 2-D sin-cos table
in the encoder and a 1-D one in the decoder, patch 4x16 over 200x80 inputs, mask ratio 0.8.

Where the official code is wrong, this one differs (set the flag to get the official wiring):
- FFN2 reads its own ``norm3`` (official: builds ``norm3`` but reuses ``norm2``, leaving an
  unused parameter); ``share_ffn2_norm=True`` reproduces the official wiring.
- ``use_rope`` is 2-D axial RoPE over each token's original (time, frequency) position
  (official: 1-D RoPE over the positions *inside the masked subset*, off in every released
  config); it replaces the additive tables.
"""

from __future__ import annotations

from typing import Literal

from components.models.base import resolve_preset
from components.models.mae import MaskedAutoencoderViT
from components.registry import model_registry

__all__ = ["AudioMAEPlusPlus", "AUDIOMAE_PP_PRESETS"]

# encoder dim/depth/heads and decoder dim/depth/heads of the released configs
AUDIOMAE_PP_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {
        "embed_dim": 192,
        "depth": 12,
        "num_heads": 3,
        "decoder_embed_dim": 384,
        "decoder_depth": 4,
        "decoder_num_heads": 8,
    },
    "base": {
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "decoder_embed_dim": 384,
        "decoder_depth": 4,
        "decoder_num_heads": 8,
    },
    "large": {
        "embed_dim": 1024,
        "depth": 24,
        "num_heads": 16,
        "decoder_embed_dim": 512,
        "decoder_depth": 4,
        "decoder_num_heads": 8,
    },
}


@model_registry.register("audiomae++", version="1.0")
class AudioMAEPlusPlus(MaskedAutoencoderViT):
    """AudioMAE++ masked autoencoder; ``preset`` tiny/base/large, explicit keywords override it.

    Trainable parameters with the official configuration (200x80, patch 4x16):
    tiny 20,859,200 / base 154,014,272 / large 525,575,504 with our own LN3, and
    20,851,520 / 153,992,768 / 525,522,256 with ``share_ffn2_norm=True`` (the official
    model's count minus its unused ``norm3``).
    """

    published_parameter_counts = (
        ({"preset": "tiny"}, 20_859_200),
        ({"preset": "base"}, 154_014_272),
        ({"preset": "large"}, 525_575_504),
        ({"preset": "tiny", "share_ffn2_norm": True}, 20_851_520),
        ({"preset": "base", "share_ffn2_norm": True}, 153_992_768),
        ({"preset": "large", "share_ffn2_norm": True}, 525_522_256),
    )

    def __init__(
        self,
        preset: Literal["tiny", "base", "large"] = "base",
        img_size: tuple[int, int] = (200, 80),
        patch_size: tuple[int, int] = (4, 16),
        in_chans: int = 1,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        decoder_embed_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.8,
        mask_mode: Literal["random", "time", "freq"] = "random",
        norm_pix_loss: bool = False,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        use_macaron: bool = True,
        use_swiglu: bool = True,
        use_rope: bool = False,
        rope_theta: float = 100.0,
        share_ffn2_norm: bool = False,
    ) -> None:
        sizes = resolve_preset(
            "audiomae++",
            AUDIOMAE_PP_PRESETS,
            preset,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            decoder_embed_dim=decoder_embed_dim,
            decoder_depth=decoder_depth,
            decoder_num_heads=decoder_num_heads,
        )
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            mlp_ratio=mlp_ratio,
            mask_ratio=mask_ratio,
            mask_mode=mask_mode,
            norm_pix_loss=norm_pix_loss,
            qkv_bias=qkv_bias,
            drop_path_rate=drop_path_rate,
            use_macaron=use_macaron,
            use_swiglu=use_swiglu,
            share_ffn2_norm=share_ffn2_norm,
            use_rope=use_rope,
            rope_theta=rope_theta,
            decoder_pos_embed_dims=1,
            **sizes,
        )
        self.preset = preset
