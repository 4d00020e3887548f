"""Import and export the official checkpoints' state-dict layouts.

Layouts handled:
- ``audiomae``: facebookresearch/AudioMAE ``models_mae.MaskedAutoencoderViT`` (pre-training).
  Key names equal ours; the fixed position tables are copied as they are. The official tables
  are laid out on an 8x64 (frequency x time) grid while the tokens are time-major 64x8, so
  the official token ``i`` carries the code of cell ``(i // 64, i % 64)``; copying the table
  row for row keeps the network exactly the official one (``official_audiomae_pos_embed``
  rebuilds that table). The released AS-2M checkpoint has a local (Swin) decoder whose keys
  we do not model: load it with ``decoder=False`` to take its encoder.
- ``audiomae_finetuned``: AudioMAE ``models_vit.VisionTransformer(global_pool=True)``: encoder
  keys without ``norm``, plus ``fc_norm`` and ``head``; loads into ``AudioMAEClassifier``.
- ``audiomae++``: SarthakYadav/audiomae-plusplus-official ``MAE_PlusPlus``: ``encoder.*`` /
  ``decoder.*`` prefixes and its own sub-module names. Its blocks hold a ``norm3`` that the
  official forward never uses (FFN2 reads ``norm2``): importing into our default model (own
  LN3) copies ``norm2`` into ``norm3``, so the function is the official one; importing into
  ``share_ffn2_norm=True`` drops it. Both are reported in ``CheckpointReport.dropped``.

Missing, unexpected and wrongly shaped keys are reported by name; strict loading raises
``CheckpointMismatchError`` listing them.

Files are read with ``torch.load(weights_only=True)``. Both official repos' training code
(``misc.save_model``) saves ``{"model", "optimizer", "epoch", "scaler", "args"}``, where ``args``
is an ``argparse.Namespace``; AudioMAE's SLURM launcher (``submitit_pretrain.py``, which its
AS-2M pre-training script uses) puts ``pathlib.PosixPath`` folders in it, and AudioMAE++'s
``train_mae_spec.py`` an ``ml_collections.ConfigDict`` (``args.config``). Exactly these three
classes are allow-listed for the load (the path read as a ``PurePosixPath``, the ConfigDict as
``OfficialConfigDict``, without that package); a file that pickles anything else is refused,
naming what it holds, before any of it is built.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.models.layers import sincos_embed_1d

__all__ = [
    "CheckpointMismatchError",
    "CheckpointReport",
    "detect_layout",
    "audiomae_pp_to_ours",
    "ours_to_audiomae_pp",
    "compare_state_dict",
    "load_official_checkpoint",
    "read_official_checkpoint",
    "OfficialConfigDict",
    "export_official_state_dict",
    "official_audiomae_pos_embed",
    "crop_official_audiomae_pos_embed",
]

LAYOUTS = ("audiomae", "audiomae_finetuned", "audiomae++", "ours")

# official AudioMAE++ sub-module names -> ours, inside a block
_PP_BLOCK_NAMES = (
    ("ffn1.layer1.", "ffn1.fc1."),
    ("ffn1.layer2.", "ffn1.fc2."),
    ("attn.qkv_layer.", "attn.qkv."),
    ("attn.proj_layer.", "attn.proj."),
    ("ffn2.linear1.", "ffn2.fc1_x."),
    ("ffn2.linear2.", "ffn2.fc1_g."),
    ("ffn2.ln.", "ffn2.norm."),
    ("ffn2.project.", "ffn2.fc2."),
    # a plain ViT block in the official code (not in released configs)
    ("mlp.layer1.", "mlp.fc1."),
    ("mlp.layer2.", "mlp.fc2."),
)
# official AudioMAE++ top-level prefixes -> ours
_PP_PREFIXES = (
    ("encoder.blocks.", "blocks."),
    ("encoder.encoder_norm.", "norm."),
    ("encoder.pos_embed", "pos_embed"),
    ("decoder.decoder_blocks.", "decoder_blocks."),
    ("decoder.decoder_embed.", "decoder_embed."),
    ("decoder.decoder_norm.", "decoder_norm."),
    ("decoder.decoder_pred.", "decoder_pred."),
    ("decoder.decoder_pos_embed", "decoder_pos_embed"),
    ("decoder.mask_token", "mask_token"),
)
_FIXED_TABLES = ("pos_embed", "decoder_pos_embed")
_NORM3 = re.compile(r"^(.*blocks\.\d+\.)norm3\.(weight|bias)$")
# decoder keys in our naming (a classifier's carry the "encoder." prefix)
_DECODER = re.compile(r"^(encoder\.)?(decoder_|mask_token)")
# where ml_collections defines ConfigDict: the name an AudioMAE++ training checkpoint pickles
_CONFIG_DICT_GLOBAL = "ml_collections.config_dict.config_dict.ConfigDict"


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the model; the message lists every offending key."""


@dataclass
class CheckpointReport:
    """What an import did: keys the model lacks in the checkpoint, extra keys, and more."""

    layout: str
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacks
    unexpected: list[str] = field(
        default_factory=list
    )  # checkpoint keys the model lacks
    # key -> (checkpoint shape, model shape)
    shape_mismatches: dict[str, tuple[list[int], list[int]]] = field(
        default_factory=dict
    )
    dropped: list[str] = field(
        default_factory=list
    )  # official keys skipped on purpose, with why
    fresh: list[str] = field(
        default_factory=list
    )  # model keys left at their init on purpose (a new head)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def describe(self) -> str:
        lines = [f"checkpoint layout {self.layout!r}"]
        for title, keys in (
            ("missing in checkpoint", self.missing),
            ("unexpected (not in model)", self.unexpected),
            (
                "shape mismatches",
                [
                    f"{key}: checkpoint {saved} vs model {wanted}"
                    for key, (saved, wanted) in self.shape_mismatches.items()
                ],
            ),
            ("dropped on purpose", self.dropped),
            ("newly initialised", self.fresh),
        ):
            if keys:
                lines.append(f"{title} ({len(keys)}): " + ", ".join(keys))
        return "\n".join(lines)


def _unwrap(
    state: Mapping[str, torch.Tensor] | Mapping[str, object],
) -> dict[str, torch.Tensor]:
    """Take the weights out of a training checkpoint (``{"model": ...}``) and strip ``module.``."""
    for key in ("model", "state_dict", "model_state_dict"):
        inner = state.get(key) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping):
            state = inner
            break
    return {
        (k[len("module.") :] if k.startswith("module.") else k): v
        for k, v in state.items()
    }


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Which of ``LAYOUTS`` a state dict is in, from its key names."""
    keys = set(state)
    if any(k.startswith(("encoder.blocks.", "decoder.decoder_blocks.")) for k in keys):
        if any(".qkv_layer." in k for k in keys):
            return "audiomae++"
        return (
            "ours"  # an AudioMAEClassifier's own state dict (encoder.blocks..., head)
        )
    if "head.weight" in keys and "fc_norm.weight" in keys:
        return "audiomae_finetuned"
    if any(k.startswith("blocks.") for k in keys):
        return (
            "ours"
            if any(".ffn1.fc1." in k or ".fc1_x." in k for k in keys)
            else "audiomae"
        )
    raise CheckpointMismatchError(
        "unrecognised checkpoint: no 'blocks.*' or 'encoder.blocks.*' keys; expected an official AudioMAE, "
        "AudioMAE++ or sigmae state dict (first keys: "
        + ", ".join(sorted(keys)[:5])
        + ")"
    )


def audiomae_pp_to_ours(
    state: Mapping[str, torch.Tensor], share_ffn2_norm: bool = False
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an official AudioMAE++ state dict to ours; returns ``(state, dropped keys)``."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        for old_prefix, our_prefix in _PP_PREFIXES:
            if new.startswith(old_prefix):
                new = our_prefix + new[len(old_prefix) :]
                break
        for old_name, our_name in _PP_BLOCK_NAMES:
            new = new.replace(old_name, our_name)
        renamed[new] = value
    dropped = []
    for key in [k for k in renamed if _NORM3.match(k)]:
        prefix, kind = _NORM3.match(key).groups()  # type: ignore[union-attr]
        official_key = _ours_key_to_pp(key)
        if share_ffn2_norm:
            dropped.append(f"{official_key} (unused by the official forward)")
            del renamed[key]
        else:
            # official FFN2 reads norm2: our own norm3 starts as that norm, so outputs match
            renamed[key] = renamed[f"{prefix}norm2.{kind}"].clone()
            dropped.append(
                f"{official_key} (unused by the official forward; norm3 := norm2)"
            )
    return renamed, dropped


def _ours_key_to_pp(key: str) -> str:
    for old_name, our_name in _PP_BLOCK_NAMES:
        key = key.replace(our_name, old_name)
    for old_prefix, our_prefix in _PP_PREFIXES:
        if key.startswith(our_prefix):
            return old_prefix + key[len(our_prefix) :]
    return key


def ours_to_audiomae_pp(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our AudioMAE++ state dict in the official layout (adds the official, unused ``norm3``).

    The official forward feeds FFN2 with ``norm2``; a model trained with its own LN3 cannot be
    expressed there unless its ``norm3`` equals its ``norm2``, so that case raises.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _NORM3.match(key)
        if match is not None:
            prefix, kind = match.groups()
            norm2 = state[f"{prefix}norm2.{kind}"]
            if norm2.device.type != "meta" and not torch.equal(value, norm2):
                raise CheckpointMismatchError(
                    f"{key} differs from {prefix}norm2.{kind}: the official AudioMAE++ feeds FFN2 with norm2, so a "
                    f"model with its own LN3 has no official equivalent; train with share_ffn2_norm=True to export"
                )
        out[_ours_key_to_pp(key)] = value
    for key in list(out):
        match = re.match(r"^(.*blocks\.\d+\.)norm2\.(weight|bias)$", key)
        if match is not None and f"{match.group(1)}norm3.{match.group(2)}" not in out:
            norm3 = (
                torch.ones_like(out[key])
                if match.group(2) == "weight"
                else torch.zeros_like(out[key])
            )
            out[f"{match.group(1)}norm3.{match.group(2)}"] = norm3
    return out


def compare_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    layout: str = "ours",
    dropped: list[str] | None = None,
) -> CheckpointReport:
    """Keys and shapes of ``state`` against ``model.state_dict()`` (works on the meta device)."""
    expected = model.state_dict()
    report = CheckpointReport(layout=layout, dropped=list(dropped or []))
    report.missing = sorted(k for k in expected if k not in state)
    report.unexpected = sorted(k for k in state if k not in expected)
    report.shape_mismatches = {
        k: (list(state[k].shape), list(expected[k].shape))
        for k in sorted(state)
        if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)
    }
    return report


def convert_to_ours(
    model: nn.Module, state: Mapping[str, torch.Tensor], decoder: bool = True
) -> tuple[dict[str, torch.Tensor], CheckpointReport]:
    """Any known layout -> our key names for ``model``, with a report (nothing is loaded).

    ``decoder=False`` leaves every decoder key of ``state`` out (reported as dropped) and does
    not expect the model's decoder in it: the model keeps its own.
    """
    state = _unwrap(state)
    layout = detect_layout(state)
    dropped: list[str] = []
    if layout == "audiomae++":
        share = bool(getattr(model, "share_ffn2_norm", False))
        encoder = getattr(model, "encoder", None)
        if encoder is not None and hasattr(encoder, "share_ffn2_norm"):
            share = bool(encoder.share_ffn2_norm)
        state, dropped = audiomae_pp_to_ours(state, share_ffn2_norm=share)
    elif layout == "audiomae_finetuned":
        if hasattr(model, "encoder"):
            state = {
                (k if k.startswith(("fc_norm.", "head.")) else f"encoder.{k}"): v
                for k, v in state.items()
            }
        else:  # into an autoencoder: its encoder only (the official fine-tuned model has no `norm`)
            for key in [k for k in state if k.startswith(("fc_norm.", "head."))]:
                dropped.append(f"{key} (classifier head; the target is an autoencoder)")
                del state[key]
    expected = model.state_dict()
    pretrained_into_classifier = hasattr(model, "encoder") and not any(
        k.startswith("encoder.") for k in state
    )
    if pretrained_into_classifier:
        # a pre-training checkpoint into a classifier: take its encoder, leave out its decoder
        state = {f"encoder.{k}": v for k, v in state.items()}
    state = dict(state)
    for key in list(state):
        bare = key.split(".")[-1]
        if not decoder and _DECODER.match(key):
            # encoder only: the model keeps its own decoder, even where names and shapes
            # coincide (the released AS-2M Swin decoder's blocks match a global decoder's)
            dropped.append(f"{key} (decoder, not loaded)")
            del state[key]
        elif bare in _FIXED_TABLES and key not in expected:
            dropped.append(
                f"{key} (fixed position table; this model uses RoPE or has no decoder)"
            )
            del state[key]
        elif not decoder or hasattr(model, "encoder"):
            if _DECODER.match(key) and key not in expected:
                dropped.append(f"{key} (decoder, not loaded)")
                del state[key]
            elif re.match(r"^(encoder\.)?norm\.", key) and key not in expected:
                dropped.append(
                    f"{key} (encoder norm; global-pool classifier uses fc_norm)"
                )
                del state[key]
    if layout in ("audiomae", "audiomae_finetuned"):
        for key in [
            k for k in state if k.split(".")[-1] in _FIXED_TABLES and k in expected
        ]:
            if state[key].shape != expected[key].shape:
                grid = getattr(model, "grid_size", None) or model.encoder.grid_size
                cropped = crop_official_audiomae_pos_embed(state[key], grid)
                if cropped is not None:
                    dropped.append(
                        f"{key} (time axis cropped to {grid[0]} patches, as AudioMAE's fine-tuning does)"
                    )
                    state[key] = cropped
    report = compare_state_dict(model, state, layout, dropped)
    if not decoder:
        # the model's own decoder is kept, so the checkpoint need not hold one
        report.missing = [k for k in report.missing if not _DECODER.match(k)]
    if pretrained_into_classifier:
        # pre-training weights into a classifier: the head is new by design
        report.fresh = [k for k in report.missing if not k.startswith("encoder.")]
        report.missing = [k for k in report.missing if k.startswith("encoder.")]
    return state, report


def crop_official_audiomae_pos_embed(
    table: torch.Tensor, grid_size: tuple[int, int]
) -> torch.Tensor | None:
    """An official AudioMAE table ``[1, 1+F'*T_old, D]`` for a shorter time grid ``(T', F')``.

    AudioMAE fine-tunes ESC-50 (512 frames) from AudioSet weights (1024 frames) by keeping the
    first ``T'`` columns of its ``(F', T_old)``-laid-out table (``interpolate_pos_embed_audio``);
    this does the same. ``None`` when the table cannot be cropped to that grid.
    """
    new_time, freq = grid_size
    rows = table.shape[1] - 1
    if rows % freq or rows // freq < new_time:
        return None
    old_time = rows // freq
    tokens = table[:, 1:].reshape(table.shape[0], freq, old_time, table.shape[-1])[
        :, :, :new_time
    ]
    return torch.cat(
        [
            table[:, :1],
            tokens.reshape(table.shape[0], freq * new_time, table.shape[-1]),
        ],
        dim=1,
    )


class OfficialConfigDict:
    """An AudioMAE++ training checkpoint's ``args.config`` (an ``ml_collections.ConfigDict``), as read here.

    No ``ml_collections`` is needed: unpickling fills this empty stand-in's ``__dict__`` with the
    pickled state (``_fields`` maps names to values; nested configs are stand-ins too). It is kept
    for inspection only: nothing of it is run or used to build the model.
    """


def official_safe_globals() -> list[Any]:
    """What the official training checkpoints pickle besides tensors and plain containers.

    Under their pickled names, read as inert stand-ins (torch >= 2.6): ``pathlib.PosixPath`` as a
    ``PurePosixPath`` (no file-system methods, loads on any OS), the ConfigDict as
    ``OfficialConfigDict``. Older torch allows ``argparse.Namespace`` and ``PosixPath`` only.
    """
    allowed: list[Any] = [argparse.Namespace]
    version = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    if version >= (2, 6):
        allowed.append((pathlib.PurePosixPath, "pathlib.PosixPath"))
        allowed.append((OfficialConfigDict, _CONFIG_DICT_GLOBAL))
    else:
        allowed.append(pathlib.PosixPath)
    return allowed


def _refused_globals(path: Path, message: str) -> list[str]:
    """The pickled classes / functions a weights-only load refused, read off the file, never imported."""
    names = set(
        re.findall(r"GLOBAL (\S+) (?:was not an allowed|whose module)", message)
    )
    find = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if find is not None:
        try:
            names.update(find(path))
        except Exception:  # not a zip checkpoint: the message's name is all there is
            pass
    return sorted(names)


def read_official_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """A checkpoint file's content, loaded with ``torch.load(weights_only=True)`` onto the CPU.

    Beside tensors and plain containers, exactly what the official training checkpoints hold is
    allowed (``official_safe_globals``: ``argparse.Namespace``, ``PosixPath``, a ConfigDict), for this
    load only (torch >= 2.5; torch 2.4 reads plain state dicts only). A file that pickles anything
    else raises a one-line ``CheckpointMismatchError`` naming it; none of it is run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; download it or pass the right path"
        )
    allow = getattr(torch.serialization, "safe_globals", None)
    allowed = (
        allow(official_safe_globals())
        if allow is not None
        else contextlib.nullcontext()
    )
    refused: list[str] = []
    try:
        with allowed:
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as error:
                refused = _refused_globals(path, str(error))
                raise
    except Exception as error:  # a torn file, or one holding other pickled objects
        if refused:
            raise CheckpointMismatchError(
                f"checkpoint {path} holds {', '.join(refused)}: refused unrun, since a checkpoint may"
                " hold only tensors, plain containers and the argparse.Namespace, pathlib.PosixPath"
                " and ml_collections ConfigDict of the official training checkpoints"
            ) from None
        # only torch's first sentence: the rest advises weights_only=False, which runs code
        reason = str(error).split(". ")[0].splitlines()[0] if str(error) else ""
        raise CheckpointMismatchError(
            f"cannot load checkpoint {path} ({type(error).__name__}: {reason}); expected a state dict of"
            " tensors (an official AudioMAE / AudioMAE++ release or training checkpoint, or"
            " torch.save(model.state_dict()))"
        ) from None
    if not isinstance(payload, Mapping):
        raise CheckpointMismatchError(
            f"checkpoint {path} holds a {type(payload).__name__}, not a state dict or a training checkpoint"
        )
    return payload


def _state_dict_from(
    source: str | Path | Mapping[str, torch.Tensor],
) -> Mapping[str, Any]:
    return source if isinstance(source, Mapping) else read_official_checkpoint(source)


def load_official_checkpoint(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    strict: bool = True,
    decoder: bool = True,
) -> CheckpointReport:
    """Load an official (or our own) checkpoint file / state dict into ``model``.

    A file may be an official training checkpoint (``read_official_checkpoint``).
    ``decoder=False`` takes only the encoder (e.g. AudioMAE's released Swin-decoder checkpoint):
    every decoder tensor of ``model`` stays as it was. With ``strict`` any missing, unexpected or
    mis-shaped key raises ``CheckpointMismatchError`` naming them all; otherwise what fits is
    loaded and the report says what did not.
    """
    state, report = convert_to_ours(model, _state_dict_from(source), decoder=decoder)
    if strict and not report.ok:
        raise CheckpointMismatchError(
            f"checkpoint does not fit {type(model).__name__}:\n{report.describe()}"
        )
    model.load_state_dict(
        {k: v for k, v in state.items() if k not in report.shape_mismatches},
        strict=False,
    )
    return report


def export_official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights in its official layout (AudioMAE / AudioMAE++ / fine-tuned AudioMAE)."""
    state = model.state_dict()
    if hasattr(model, "encoder") and hasattr(model, "head"):
        if getattr(model.encoder, "use_macaron", False):
            raise CheckpointMismatchError(
                "the official AudioMAE++ code has no fine-tuned classifier layout to export to"
            )
        return {
            (k[len("encoder.") :] if k.startswith("encoder.") else k): v
            for k, v in state.items()
        }
    if getattr(model, "use_rope", False):
        raise CheckpointMismatchError(
            "a model with use_rope=True has no official equivalent (official RoPE is 1-D over masked positions)"
        )
    if getattr(model, "use_macaron", False):
        return ours_to_audiomae_pp(state)
    return dict(state)


def official_audiomae_pos_embed(
    embed_dim: int, grid_size: tuple[int, int]
) -> torch.Tensor:
    """The table official AudioMAE builds for a time-major ``grid_size = (T', F')`` token grid.

    Its patch embedding reports the grid as ``(F', T')`` and its table is laid out on that
    grid: row ``i`` (after the CLS row) codes column ``i % T'`` in the first half of the
    channels and row ``i // T'`` in the second, while token ``i`` is patch ``(i // F', i % F')``.
    """
    rows_official, cols_official = grid_size[1], grid_size[0]
    index = torch.arange(rows_official * cols_official, dtype=torch.float64)
    table = torch.cat(
        [
            sincos_embed_1d(embed_dim // 2, index % cols_official),
            sincos_embed_1d(embed_dim // 2, index // cols_official),
        ],
        dim=1,
    )
    return torch.cat([torch.zeros(1, embed_dim), table], dim=0).unsqueeze(0)
