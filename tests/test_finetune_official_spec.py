"""specs/esc50_finetune_official.yaml end to end on CPU: the emitted script fine-tunes from a
checkpoint file in the official AudioMAE training layout passed with ``--kfold.checkpoint``.

The file is tiny (the spec's --smoke model: ViT-tiny width, 2 blocks, 48x128 input) but laid out
as the released AS-2M one is: ``misc.save_model``'s dict with an ``argparse.Namespace``, a position
table for a twice longer (AudioSet-like) time grid, and a 16-block local (Swin) decoder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from components.models import AudioMAE
from components.models.official_weights import official_audiomae_pos_embed
from generator.build import build_spec, load_index
from test_official_checkpoint_files import _official_swin_decoder, official_args, randomised, training_file
from test_shipped_specs import clean_env

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "esc50_finetune_official.yaml"
NAME = SPEC.stem
# the spec's smoke model at twice its time length (AudioSet's 1024 frames vs ESC-50's 512)
SMOKE_MODEL = dict(preset="tiny", img_size=(96, 128), depth=2, decoder_depth=1, decoder_embed_dim=64, decoder_num_heads=2)


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    build_spec(SPEC, out, index=load_index())
    return out / NAME / f"{NAME}.py"


def run(script: Path, cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(script), "--smoke", *flags], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=240)


def test_the_emitted_script_fine_tunes_from_an_official_training_checkpoint(script: Path, tmp_path: Path) -> None:
    source = randomised(AudioMAE(**SMOKE_MODEL), seed=11)
    weights = {k: v for k, v in source.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    weights["pos_embed"] = official_audiomae_pos_embed(192, (6, 8))
    weights |= _official_swin_decoder(64, 192, 16 * 16, 1 + 6 * 8)
    checkpoint = training_file(tmp_path / "pretrained.pth", weights, official_args())

    out = tmp_path / "run"
    # lr 1e-30: the fine-tuning steps run but cannot move a weight, so a fold's checkpoint shows what was loaded
    completed = run(script, tmp_path, "--out-dir", str(out), "--kfold.checkpoint", str(checkpoint), "--kfold.lr", "1e-30")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert f"loaded {checkpoint} (audiomae layout, encoder weights)" in completed.stdout
    summary = json.loads((out / "summary.json").read_text())["steps"]["kfold"]
    assert len(summary["folds"]) == 2 and all(r["encoder"] == str(checkpoint) for r in summary["per_fold"].values())
    for fold in summary["per_fold"].values():
        state = torch.load(fold["last_checkpoint"], map_location="cpu", weights_only=True)["model"]
        for key in ("patch_embed.proj.weight", "cls_token", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.bias", "blocks.1.norm2.weight"):
            assert torch.equal(state[f"encoder.{key}"], weights[key]), key
        # AudioSet's 6x8 table, cropped to the smoke model's 3x8 grid as AudioMAE's fine-tuning does
        assert torch.equal(state["encoder.pos_embed"], official_audiomae_pos_embed(192, (3, 8)))
        assert not any("decoder" in key or "mask_token" in key for key in state)


class OpensAFile:
    """Unpickling this would open (so create) ``path`` for writing: code a checkpoint must not run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_the_emitted_script_refuses_a_checkpoint_that_holds_code(script: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    weights = randomised(AudioMAE(**SMOKE_MODEL), seed=12).state_dict()
    planted = training_file(tmp_path / "planted.pth", weights, official_args(hook=OpensAFile(marker)))
    completed = run(script, tmp_path, "--out-dir", str(tmp_path / "run"), "--kfold.checkpoint", str(planted))
    assert completed.returncode == 2, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert not marker.exists(), "the checkpoint's code ran"
    assert "Traceback" not in completed.stderr and len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert f"planted.pth holds {open.__module__}.open: refused unrun" in completed.stderr, completed.stderr


def test_the_build_readme_says_where_the_checkpoint_is_and_what_the_paper_reports(script: Path) -> None:
    readme = (script.parent / "README.md").read_text()
    for text in ("https://github.com/facebookresearch/AudioMAE", "1ni_DV4dRf7GxM8k-Eirx71WP9Gg89wwu", "ckpt/pretrained.pth",
                 "--kfold.checkpoint PATH", "94.1 %", "93.6 %"):
        assert text in readme, text
    assert "| `--kfold.checkpoint` | `'ckpt/pretrained.pth'` |" in readme
