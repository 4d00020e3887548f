"""HEAR 2021 export: a standalone Python module serving the run's encoder through the HEAR API.

The HEAR API (neuralaudio.ai/hear2021) asks a module for ``load_model(model_file_path)``,
``get_scene_embeddings(audio, model) -> [n_sounds, D]`` and
``get_timestamp_embeddings(audio, model) -> ([n_sounds, n_timestamps, D], [n_sounds,
n_timestamps] in ms)``, ``audio`` being ``[n_sounds, n_samples]`` float32 at
``model.sample_rate``. ``HearEncoder`` forms them as AudioMAE++'s official HEAR runtime
(``hear_api/runtime.py``) does, for any model of the catalog: the clip's whole feature map
(standardised over the clip), cut into windows of the model's input length (AudioMAE++ 200
frames, AudioMAE its 512 or 1024), the last one zero-padded; each window's patch tokens
(CLS dropped), the frequency tokens of one time step concatenated (``grid_f * embed_dim``
wide); tokens that lie wholly in the padding dropped. The scene embedding is the mean of
the timestamp embeddings.

Timestamps: the HEAR API (hearbenchmark.com/hear-api.html) asks for embeddings "at regular
intervals centered at timestamps", in ms. The clip's ``duration`` is shared evenly among its
``tokens`` (AudioMAE++ about 40 ms each, AudioMAE 160 ms), and token ``i`` is stamped at the
centre of its share, ``(i + 0.5) * duration / tokens`` ms: regular, inside the clip, the last
one half a hop before its end. The official runtime stamps the starts, ``i * duration /
tokens`` (``hear_api/feature_helper.py``, ``get_timestamps``), half a hop early.

Where the official runtime is wrong, this one differs: its ``forward_features`` regroups the
time-major tokens with ``rearrange("b (f t) d -> b t (f d)")``, i.e. as if they were
frequency-major, so its row ``t`` joins tokens of five different times (0.4 s apart in a
2 s window) and its scene embedding's block ``f`` averages a time span instead of frequency
band ``f``. Here row ``t`` is time step ``t``'s frequency tokens, and block ``f`` of the scene
embedding is band ``f`` averaged over the clip.

``write_hear_module`` writes the module: the emitted script's own text (standard library
and torch only, so the module is too; it does not import the script) followed by
``load_model``, ``get_scene_embeddings`` and ``get_timestamp_embeddings``, with the model's
and transform's settings of the run written in as literals. ``load_model`` reads this
script's checkpoints and official AudioMAE / AudioMAE++ releases (encoder weights only,
``weights_only=True``).
"""

from __future__ import annotations

import ast
import inspect
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from components.run_checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_write,
    load_model_weights,
)
from components.errors import UsageError
from components.models.official_weights import (
    load_official_checkpoint,
    read_official_checkpoint,
)

HEAR_WINDOWS_PER_CALL = (
    16  # encoder windows per forward pass (bounds memory on long clips)
)


class HearEncoder(nn.Module):
    """A frozen encoder and its front end with the HEAR model attributes.

    ``sample_rate``, ``scene_embedding_size`` and ``timestamp_embedding_size`` (both
    ``grid_f * embed_dim``). The transform must keep every frame (``target_frames=None``).
    """

    def __init__(self, model: nn.Module, transform: nn.Module) -> None:
        super().__init__()
        if getattr(transform, "input_kind", "audio") != "audio" or not getattr(
            transform, "sample_rate", None
        ):
            raise ValueError(
                f"HEAR export needs an audio transform with a sample_rate, got {type(transform).__name__}"
            )
        self.model = model.eval()
        self.transform = transform.eval()
        self.sample_rate = int(transform.sample_rate)
        self.window_frames = int(model.img_size[0])
        self.token_frames = int(model.patch_size[0])
        self.tokens_per_window = int(model.grid_size[0])
        self.timestamp_embedding_size = int(model.grid_size[1] * model.embed_dim)
        self.scene_embedding_size = self.timestamp_embedding_size

    def check_audio(self, audio: Any) -> torch.Tensor:
        """``audio`` as a float32 ``[n_sounds, n_samples]`` tensor on the model's device."""
        if not isinstance(audio, torch.Tensor):
            audio = torch.as_tensor(audio)
        if audio.dim() != 2:
            raise ValueError(
                f"HEAR audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}"
            )
        device = next(self.model.parameters()).device
        return audio.to(device=device, dtype=torch.float32)

    @torch.no_grad()
    def token_embeddings(self, audio: Any) -> tuple[torch.Tensor, int]:
        """Per-token embeddings ``[n_sounds, tokens, grid_f * D]`` and the clip length in samples."""
        audio = self.check_audio(audio)
        sounds, samples = audio.shape
        shortest = int(getattr(self.transform, "min_num_samples", 1))
        if samples < shortest:  # too short for one frame: pad with silence
            audio = F.pad(audio, (0, shortest - samples))
        features = self.transform(audio)  # [n, C, T, F], standardised over the clip
        frames = features.shape[2]
        tokens = max(1, math.ceil(frames / self.token_frames))
        windows = max(1, math.ceil(frames / self.window_frames))
        features = F.pad(features, (0, 0, 0, windows * self.window_frames - frames))
        channels, bins = features.shape[1], features.shape[3]
        features = features.reshape(
            sounds, channels, windows, self.window_frames, bins
        ).transpose(1, 2)
        features = features.reshape(
            sounds * windows, channels, self.window_frames, bins
        )
        parts = []
        for part in features.split(HEAR_WINDOWS_PER_CALL):
            patches = self.model.forward_features(part)[:, 1:].float()  # CLS dropped
            # tokens are time-major: a time step's frequency tokens, side by side
            parts.append(patches.reshape(part.shape[0], self.tokens_per_window, -1))
        embeddings = torch.cat(parts).reshape(
            sounds, windows * self.tokens_per_window, -1
        )
        return embeddings[:, :tokens].contiguous(), samples

    def timestamp_embeddings(self, audio: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``([n_sounds, tokens, D], timestamps [n_sounds, tokens] in ms)``.

        Token ``i``'s timestamp is the centre of its share of the clip, ``(i + 0.5) *
        duration / tokens`` ms (in float64 on the CPU, which every device has: no drift
        on long clips).
        """
        embeddings, samples = self.token_embeddings(audio)
        sounds, tokens = embeddings.shape[:2]
        step = 1000.0 * samples / self.sample_rate / tokens
        centres = (torch.arange(tokens, dtype=torch.float64) + 0.5) * step
        timestamps = centres.to(torch.float32).to(embeddings.device)
        return embeddings, timestamps.expand(sounds, tokens).contiguous()

    def scene_embeddings(self, audio: Any) -> torch.Tensor:
        """``[n_sounds, D]``: the mean of the clip's timestamp embeddings."""
        embeddings, _ = self.token_embeddings(audio)
        return embeddings.mean(dim=1)


def load_encoder_weights(model: nn.Module, path: str | Path) -> None:
    """This script's checkpoint as it is, or an official release's encoder weights (strict)."""
    path = Path(path)
    payload = dict(read_official_checkpoint(path))
    if payload.get("format") == CHECKPOINT_FORMAT:
        load_model_weights(model, payload, path)
    else:
        load_official_checkpoint(model, payload, strict=True, decoder=False)


def hear_load_model(
    model_file_path: str | Path,
    model_class: type,
    model_config: dict[str, Any],
    transform_class: type,
    transform_config: dict[str, Any],
) -> HearEncoder:
    """The HEAR model: ``model_class(**model_config)`` with the file's weights, on the CPU."""
    model = model_class(**model_config)
    load_encoder_weights(model, model_file_path)
    remove_decoder = getattr(model, "remove_decoder", None)
    if remove_decoder is not None:
        remove_decoder()
    settings = dict(transform_config)
    if "target_frames" in inspect.signature(transform_class).parameters:
        settings["target_frames"] = None  # whole clips; HearEncoder cuts the windows
    return HearEncoder(model, transform_class(**settings))


def hear_scene_embeddings(audio: Any, model: HearEncoder) -> torch.Tensor:
    return model.scene_embeddings(audio)


def hear_timestamp_embeddings(
    audio: Any, model: HearEncoder
) -> tuple[torch.Tensor, torch.Tensor]:
    return model.timestamp_embeddings(audio)


def literal_text(value: Any, what: str) -> str:
    """``repr(value)`` when it reads back as the same Python literal (settings only, never code)."""
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise UsageError(f"HEAR export: {what} {value!r} is not a plain literal")
    return text


def strip_main_guard(source: str) -> str:
    """The script's text without its trailing ``if __name__ == "__main__":`` block."""
    match = re.search(r'\nif __name__ == "__main__":\n(?:[ \t]+.*\n?)+\Z', source)
    return source[: match.start() + 1] if match else source


def hear_module_body(classes: list[type]) -> tuple[str, bool]:
    """The code the module carries, and whether it is standalone.

    In an emitted script the runtime, model and transform are definitions of the script:
    the module is the script's text. From the catalog it imports them instead (not standalone).
    """
    home = sys.modules.get(hear_load_model.__module__)
    if home is not None and not hear_load_model.__module__.startswith("components."):
        if any(getattr(home, cls.__name__, None) is not cls for cls in classes):
            raise UsageError(
                "HEAR export: the model or transform class is not defined in the script"
            )
        try:
            source = inspect.getsource(home)
        except (OSError, TypeError):
            raise UsageError(
                "HEAR export needs the script's source file: run the emitted .py (not the notebook)"
            ) from None
        return strip_main_guard(source), True
    names = [
        hear_load_model,
        hear_scene_embeddings,
        hear_timestamp_embeddings,
        *classes,
    ]
    lines = [
        "from __future__ import annotations",
        "",
        *(f"from {item.__module__} import {item.__name__}" for item in names),
    ]
    return "\n".join(lines) + "\n", False


def hear_module_text(
    *,
    name: str,
    weights: str,
    model_class: type,
    model_config: dict[str, Any],
    transform_class: type,
    transform_config: dict[str, Any],
) -> str:
    """The module's source: a header, the body (``hear_module_body``), the HEAR functions."""
    body, standalone = hear_module_body([model_class, transform_class])
    kind = (
        "standalone: standard library and torch only"
        if standalone
        else "imports the sigmae-gen catalog (written from the catalog, not a script)"
    )
    header = (
        f"# HEAR 2021 API module {name} ({kind}).\n"
        f"#   import {name}; model = {name}.load_model(WEIGHTS_FILE)\n"
        f"#   {name}.get_scene_embeddings(audio, model)      # [n_sounds, D]\n"
        f"#   {name}.get_timestamp_embeddings(audio, model)  # [n_sounds, T, D], [n_sounds, T] ms\n"
        "# audio: float32 [n_sounds, n_samples] at model.sample_rate. What follows is the\n"
        "# emitted script's own text; the HEAR functions are at the end of the file.\n\n"
    )
    tail = f'''

# ---------------------------------------------------------------- HEAR 2021 API
HEAR_WEIGHTS = {literal_text(str(weights), "weights path")}
HEAR_MODEL_CONFIG = {literal_text(dict(model_config), "model config")}
HEAR_TRANSFORM_CONFIG = {literal_text(dict(transform_config), "transform config")}


def load_model(model_file_path: str = HEAR_WEIGHTS):
    """The encoder with the weights of ``model_file_path`` (this script's checkpoint or an official release)."""
    return {hear_load_model.__name__}(
        model_file_path,
        {model_class.__name__},
        HEAR_MODEL_CONFIG,
        {transform_class.__name__},
        HEAR_TRANSFORM_CONFIG,
    )


def get_scene_embeddings(audio, model):
    """``[n_sounds, model.scene_embedding_size]`` float32."""
    return {hear_scene_embeddings.__name__}(audio, model)


def get_timestamp_embeddings(audio, model):
    """``([n_sounds, n_timestamps, model.timestamp_embedding_size], [n_sounds, n_timestamps] ms)``."""
    return {hear_timestamp_embeddings.__name__}(audio, model)
'''
    return header + body + tail


def write_hear_module(
    path: Path,
    *,
    weights: str | Path,
    model_class: type,
    model_config: dict[str, Any],
    transform_class: type,
    transform_config: dict[str, Any],
) -> Path:
    """Write the HEAR module to ``path`` (atomically), checked to compile."""
    name = path.stem
    if not name.isidentifier():
        raise UsageError(f"HEAR export: {name!r} is not a Python module name")
    text = hear_module_text(
        name=name,
        weights=str(Path(weights).resolve()),
        model_class=model_class,
        model_config=model_config,
        transform_class=transform_class,
        transform_config=transform_config,
    )
    compile(text, str(path), "exec")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: handle.write(text.encode()))
    return path


def hear_module_name(pipeline_name: str) -> str:
    """``hear_<spec name>`` as a Python identifier."""
    return "hear_" + (re.sub(r"\W", "_", pipeline_name) or "model")


__all__ = [
    "HEAR_WINDOWS_PER_CALL",
    "HearEncoder",
    "hear_load_model",
    "hear_module_name",
    "hear_scene_embeddings",
    "hear_timestamp_embeddings",
    "load_encoder_weights",
    "write_hear_module",
]
