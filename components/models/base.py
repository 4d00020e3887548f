"""The model interface every registered masked autoencoder implements.

``BaseAutoencoder`` fixes the seed's interface (``forward -> (loss, pred, mask)``,
``forward_encoder``, ``forward_decoder``, ``forward_features``, ``get_embedding``) and holds the
parts every MAE shares, so that each model only writes its encoder and decoder: patchify /
unpatchify in a time-major token order, random (or time/frequency structured) masking that
draws from a ``torch.Generator`` when given one, and the masked-patch reconstruction loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from components.losses import masked_reconstruction_loss

__all__ = ["BaseAutoencoder", "resolve_preset"]

POOLING_MODES = ("mean", "cls", "max")
MASK_MODES = ("random", "time", "freq")


@torch.compiler.disable
def _seeded_uniform(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform noise from an explicit generator, on the generator's device.

    Kept out of ``torch.compile`` graphs (dynamo cannot trace generator objects), so a compiled
    model still accepts ``generator=``; without one, masking stays inside the graph.
    """
    return torch.rand(shape, device=generator.device, generator=generator)


class BaseAutoencoder(nn.Module, ABC):
    """Masked autoencoder over ``[B, C, T, F]`` spectrogram-like inputs.

    Tokens are numbered time-major: patch ``(t, f)`` of the ``grid_size = (T/pt, F/pf)`` grid is
    token ``t * grid_size[1] + f``. A patch's pixels are flattened in ``(pt, pf, C)`` order, as
    in the official AudioMAE, so its checkpoints' ``decoder_pred`` rows line up with ours.

    Subclasses set the attributes below in ``__init__`` (``_init_geometry`` does it) and
    implement ``forward_encoder``, ``forward_decoder`` and ``forward_features``.
    """

    img_size: tuple[int, int]
    in_chans: int
    patch_size: tuple[int, int]
    grid_size: tuple[int, int]
    num_patches: int
    embed_dim: int
    mask_ratio: float
    norm_pix_loss: bool
    mask_mode: str = "random"
    # (constructor kwargs, trainable parameter count) pairs from the papers / official code;
    # the contract checks build each on the meta device and compare the count
    published_parameter_counts: ClassVar[tuple[tuple[dict[str, Any], int], ...]] = ()

    def _init_geometry(
        self,
        img_size: tuple[int, int],
        patch_size: tuple[int, int],
        in_chans: int,
        embed_dim: int,
        mask_ratio: float,
        norm_pix_loss: bool,
        mask_mode: str = "random",
    ) -> None:
        """Validate and record the attributes of the interface (call from ``__init__``)."""
        img_size = (int(img_size[0]), int(img_size[1]))
        patch_size = (int(patch_size[0]), int(patch_size[1]))
        name = type(self).__name__
        if min(patch_size) < 1 or min(img_size) < 1:
            raise ValueError(
                f"{name}: img_size {img_size} and patch_size {patch_size} must be positive"
            )
        if img_size[0] % patch_size[0] or img_size[1] % patch_size[1]:
            raise ValueError(
                f"{name}: img_size {img_size} is not a multiple of patch_size {patch_size}; "
                f"crop or pad the input (e.g. the transform's target_frames) to a multiple of the patch"
            )
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"{name}: mask_ratio must be in [0, 1), got {mask_ratio}")
        if mask_mode not in MASK_MODES:
            raise ValueError(
                f"{name}: mask_mode must be one of {MASK_MODES}, got {mask_mode!r}"
            )
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = int(in_chans)
        self.grid_size = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim = int(embed_dim)
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.mask_mode = mask_mode

    # ---------------------------------------------------------------- interface
    @abstractmethod
    def forward_encoder(
        self,
        x: torch.Tensor,
        mask_ratio: float,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the kept tokens: ``(latent [B, 1+kept, D], mask [B, N], ids_restore [B, N])``."""

    @abstractmethod
    def forward_decoder(
        self, latent: torch.Tensor, ids_restore: torch.Tensor
    ) -> torch.Tensor:
        """Reconstruct every patch from the latent: ``pred [B, N, pt*pf*C]``."""

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encode all tokens without masking: ``[B, 1+N, D]`` (CLS first), after the final norm."""

    def forward(
        self,
        x: torch.Tensor,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One MAE step: ``(loss, pred [B, N, pt*pf*C], mask [B, N])`` with 1 = masked."""
        ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        latent, mask, ids_restore = self.forward_encoder(x, ratio, generator=generator)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.reconstruction_loss(x, pred, mask)
        return loss, pred, mask

    @torch.no_grad()
    def get_embedding(
        self, x: torch.Tensor, pooling_mode: str = "mean"
    ) -> torch.Tensor:
        """Clip embedding ``[B, D]``: mean or max over patch tokens, or the CLS token."""
        if pooling_mode not in POOLING_MODES:
            raise ValueError(
                f"pooling_mode must be one of {POOLING_MODES}, got {pooling_mode!r}"
            )
        tokens = self.forward_features(x)
        if pooling_mode == "cls":
            return tokens[:, 0]
        patches = tokens[:, 1:]
        return patches.mean(dim=1) if pooling_mode == "mean" else patches.amax(dim=1)

    # ---------------------------------------------------------------- shared parts
    def check_input(self, x: torch.Tensor) -> None:
        """Fail early, naming the expected shape, instead of deep inside a reshape."""
        if (
            x.dim() != 4
            or x.shape[1] != self.in_chans
            or tuple(x.shape[2:]) != self.img_size
        ):
            raise ValueError(
                f"{type(self).__name__} expects input [B, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}] "
                f"(batch, channels, time, frequency), got {list(x.shape)}; set the model's img_size/in_chans "
                f"to the transform's output shape"
            )

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, F]`` -> ``[B, N, pt*pf*C]``, tokens time-major, pixels ``(pt, pf, C)``."""
        b, c = x.shape[:2]
        (gt, gf), (pt, pf) = self.grid_size, self.patch_size
        x = x.reshape(b, c, gt, pt, gf, pf)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gt * gf, pt * pf * c)

    def unpatchify(self, p: torch.Tensor) -> torch.Tensor:
        """Inverse of ``patchify``: ``[B, N, pt*pf*C]`` -> ``[B, C, T, F]``."""
        b = p.shape[0]
        (gt, gf), (pt, pf), c = self.grid_size, self.patch_size, self.in_chans
        x = p.reshape(b, gt, gf, pt, pf, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, gt * pt, gf * pf)

    def masking_noise(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-token noise whose argsort picks the tokens to keep (lowest noise first).

        ``"time"`` / ``"freq"`` order whole time rows / frequency columns at random, and tokens
        at random inside a line, so whole lines are masked together (at most one partially),
        as in AudioMAE's structured masking; the kept count stays exact.
        """
        gt, gf = self.grid_size
        if generator is None:
            noise = torch.rand(batch, gt, gf, device=device)
        else:
            noise = _seeded_uniform((batch, gt, gf), generator).to(device)
        # structured: a line's rank (an integer) plus jitter below 1, so lines never interleave
        if self.mask_mode == "time":
            noise = (
                noise[:, :, :1].argsort(dim=1).argsort(dim=1).to(noise.dtype)
                + 0.5 * noise
            )
        elif self.mask_mode == "freq":
            noise = (
                noise[:, :1, :].argsort(dim=2).argsort(dim=2).to(noise.dtype)
                + 0.5 * noise
            )
        return noise.reshape(batch, gt * gf)

    def sample_mask(
        self,
        batch: int,
        mask_ratio: float,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw which tokens to keep: ``(mask [B, N], ids_restore [B, N], ids_keep [B, kept])``.

        ``kept = int(N * (1 - mask_ratio))`` (up to float round-off); ``mask`` is 1 for dropped tokens in the original
        order, ``ids_restore`` undoes the shuffle in the decoder, ``ids_keep`` holds each kept
        token's original index (rotary position embeddings need it after the shuffle).
        """
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        n = self.num_patches
        keep = int(
            n * (1.0 - mask_ratio) + 1e-6
        )  # 250 * (1 - 0.8) must give 50, not 49
        noise = self.masking_noise(batch, device, generator)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        mask = torch.ones(batch, n, device=device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return mask, ids_restore, ids_keep

    def reconstruction_loss(
        self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared error over masked patches (per-patch normalised target if ``norm_pix_loss``).

        With nothing masked (mask ratio 0) it falls back to the mean over all patches, so the
        loss stays finite and still trains an autoencoder instead of dividing by zero.
        """
        return masked_reconstruction_loss(
            pred, self.patchify(x), mask, norm_pix=self.norm_pix_loss
        )

    def remove_decoder(self) -> None:
        """Drop the decoder's modules (a classifier keeps only the encoder). Default: nothing to drop."""

    def no_weight_decay(self) -> set[str]:
        """Parameter names that optimizers should not decay (tokens and position tables)."""
        return {
            name
            for name, _ in self.named_parameters()
            if name.endswith(("cls_token", "mask_token", "pos_embed"))
        }


def resolve_preset(
    model: str, presets: dict[str, dict[str, int]], preset: str, **overrides: int | None
) -> dict[str, int]:
    """A preset's values with every non-None keyword put over them (explicit keywords win)."""
    if preset not in presets:
        raise ValueError(
            f"{model}: unknown preset {preset!r}; choose one of {', '.join(presets)}"
        )
    values = dict(presets[preset])
    values.update({key: value for key, value in overrides.items() if value is not None})
    return values
