"""AudioMAE (Huang et al., "Masked Autoencoders that Listen"), the baseline.

ViT encoder (patch 16x16, qkv bias, LayerNorm eps 1e-6, CLS token, 2-D sin-cos positions)
and a global ViT decoder (512-d, 16 heads, depth 8 by default), as facebookresearch/AudioMAE
``models_mae.MaskedAutoencoderViT`` with ``decoder_mode=0``. Inputs are 1024x128 (AudioSet,
10 s) or 512x128 (ESC-50, 5 s) log-mel filterbanks.

The official code lays its position tables out on an 8x64 (frequency x time) grid while its
tokens are time-major 64x8, so its token ``i`` gets the code of grid cell ``(i // 64, i % 64)``.
Ours are laid out on the token grid. Official checkpoints still load exactly: the tables are
state-dict buffers and loading copies theirs (see ``components.models.checkpoints``).
"""

from __future__ import annotations

from typing import Literal

from components.models.base import resolve_preset
from components.models.mae import MaskedAutoencoderViT
from components.registry import model_registry

__all__ = ["AudioMAE", "AUDIOMAE_PRESETS"]

# ViT encoder sizes; the decoder stays AudioMAE's 512/8/16 for every encoder size, as in MAE
AUDIOMAE_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}


@model_registry.register("baseline", version="1.0")
class AudioMAE(MaskedAutoencoderViT):
    """AudioMAE masked autoencoder; ``preset`` picks the ViT size (base = ViT-B), keywords override.

    ViT-B at 512x128: encoder 85,254,144 trainable parameters, 110,999,808 with the 8-layer
    512-d decoder (the official count; the decoder does not depend on the input size).
    """

    published_parameter_counts = (
        ({"preset": "base", "img_size": (512, 128)}, 110_999_808),
        ({"preset": "base", "img_size": (1024, 128)}, 110_999_808),
    )

    def __init__(
        self,
        preset: Literal["tiny", "small", "base", "large"] = "base",
        img_size: tuple[int, int] = (1024, 128),
        patch_size: tuple[int, int] = (16, 16),
        in_chans: int = 1,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.8,
        mask_mode: Literal["random", "time", "freq"] = "random",
        norm_pix_loss: bool = False,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
    ) -> None:
        sizes = resolve_preset(
            "baseline",
            AUDIOMAE_PRESETS,
            preset,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
        )
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            decoder_embed_dim=decoder_embed_dim,
            decoder_depth=decoder_depth,
            decoder_num_heads=decoder_num_heads,
            mlp_ratio=mlp_ratio,
            mask_ratio=mask_ratio,
            mask_mode=mask_mode,
            norm_pix_loss=norm_pix_loss,
            qkv_bias=qkv_bias,
            drop_path_rate=drop_path_rate,
            use_macaron=False,
            use_swiglu=False,
            share_ffn2_norm=False,
            use_rope=False,
            rope_theta=100.0,
            decoder_pos_embed_dims=2,
            **sizes,
        )
        self.preset = preset
