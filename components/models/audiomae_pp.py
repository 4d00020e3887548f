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

    Args:
        preset: Size of the released configuration to start from: tiny (192-d, 12
            blocks), base (768-d) or large (1024-d, 24 blocks); explicit keywords
            override it.
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
        decoder_embed_dim: Decoder width; None takes the preset's (384 for tiny and
            base, 512 for large).
        decoder_depth: Number of decoder blocks; None takes the preset's (4).
        decoder_num_heads: Attention heads per decoder block; None takes the preset's
            (8).
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
        use_macaron: Use Macaron blocks (half feed-forward, attention, feed-forward) as
            AudioMAE++ does; False gives plain pre-norm ViT blocks.
        use_swiglu: Use SwiGLU (AudioMAE++) for the blocks' (second) feed-forward layer
            instead of an MLP (SiLU in Macaron blocks, GELU in plain ones).
        use_rope: Use 2-D axial rotary position embeddings over each token's (time,
            frequency) position instead of the additive sin-cos tables.
        rope_theta: Base frequency of the rotary embeddings (only with use_rope); larger
            values give slower-turning, longer-range positions.
        share_ffn2_norm: Use the official wiring, in which the second feed-forward
            reuses norm2 (norm3 goes unused): needed to reproduce the official model's
            outputs from its released weights.
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
