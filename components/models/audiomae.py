"""AudioMAE (Huang et al., "Masked Autoencoders that Listen"), the baseline.

ViT encoder (patch 16x16, qkv bias, LayerNorm eps 1e-6, CLS token, 2-D sin-cos positions)
and a global ViT decoder (512-d, 16 heads, depth 8 by default), as facebookresearch/AudioMAE
``models_mae.MaskedAutoencoderViT`` with ``decoder_mode=0``. Inputs are 1024x128 (AudioSet,
10 s) or 512x128 (ESC-50, 5 s) log-mel filterbanks.

The official code lays its position tables out on an 8x64 (frequency x time) grid while its
tokens are time-major 64x8, so its token ``i`` gets the code of grid cell ``(i // 64, i % 64)``.
Ours are laid out on the token grid. Official checkpoints still load exactly: the tables are
state-dict buffers and loading copies theirs (see ``components.models.official_weights``).
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

    Args:
        preset: ViT encoder size: tiny (192-d), small (384-d), base (768-d, ViT-B, the
            paper's) or large (1024-d, 24 blocks); explicit keywords override it.
        img_size: Input size (frames, frequency bins) of one window; must equal the
            transform's output (target_frames and mel bins).
        patch_size: Patch size (frames, bins); each patch is one token, so smaller
            patches mean more tokens and more compute. Must divide img_size.
        in_chans: Input channels of the features (1 for a log-mel or fbank, 2 for a
            two-channel IQ spectrogram).
        embed_dim: Encoder width (token dimension); None takes the preset's.
        depth: Number of encoder blocks; None takes the preset's.
        num_heads: Attention heads per encoder block (must divide embed_dim); None takes
            the preset's.
        decoder_embed_dim: Decoder width (AudioMAE uses 512 for every encoder size).
        decoder_depth: Number of decoder blocks (AudioMAE: 8; the official checkpoint's
            local Swin decoder is not built).
        decoder_num_heads: Attention heads per decoder block (must divide
            decoder_embed_dim).
        mlp_ratio: Hidden width of each block's feed-forward layer as a multiple of its
            embed_dim.
        mask_ratio: Share of patch tokens hidden from the encoder during pre-training
            (0-1); MAE-style models use 0.75-0.8.
        mask_mode: Which tokens are masked: `random` tokens, or whole `time` rows or
            `freq` columns together (AudioMAE's structured masking).
        norm_pix_loss: Reconstruct each patch normalised to zero mean and unit variance
            (MAE's norm_pix_loss) instead of the raw features.
        qkv_bias: Give the attention's query/key/value projection a bias, as ViT does.
        drop_path_rate: Stochastic-depth rate of the last encoder block (rising linearly
            from 0 at the first); a regulariser, mostly for fine-tuning.
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
