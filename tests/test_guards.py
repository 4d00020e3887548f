"""Trust in results on real data: short clips give distinct embeddings, and degenerate runs say so.

The headline test feeds the emitted ``folder_audio`` script, at its shipped data and transform
defaults, a class-per-folder set of real spoken words of 0.2-1.5 s (espeak-ng + sox): before the
length rule every clip was zero-padded to 10 s, every 200-frame window was pure padding, all
embeddings were identical and the probe sat at chance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from components.errors import UsageError
from components.recipes.guards import check_eval_size, embedding_spread
from components.runtime import Pipeline, run_pipeline
from components.transforms.kaldi import KaldiFbank
from generator.build import build_spec
from speech import VOICES, WORDS, require_speech_tools, spoken_word_folder
from test_runtime_helpers import ALL_STEPS, Config, NeedsRootDataset, ToneDataset, make_stage, make_pipeline

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN, FINETUNE, EMBED, KNN, PROBE, KFOLD = ALL_STEPS


def script_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "2", "HOME": os.environ.get("HOME", "/tmp")}


@pytest.mark.slow
def test_short_spoken_words_with_the_shipped_folder_defaults_give_distinct_embeddings_and_a_probe_far_above_chance(
    tmp_path: Path,
) -> None:
    require_speech_tools()
    words = spoken_word_folder(tmp_path / "words")
    build = build_spec(ROOT / "specs" / "folder_audio.yaml", tmp_path / "build")
    script = tmp_path / "build" / "folder_audio" / "folder_audio.py"
    assert build is not None and script.is_file()
    out = tmp_path / "run"
    # the shipped data / transform settings; a small encoder, one epoch of pre-training (its batches
    # pass the guards), so it runs in seconds on a CPU;
    # and a speaker-disjoint split (one voice's clips never in both train and test)
    result = subprocess.run(
        [sys.executable, "-I", str(script), "--data-dir", str(words), "--out-dir", str(out), "--dtype", "fp32",
         "--data.split", "random", "--data.group_pattern", r"^(v\d+)_", "--data.cache_dir", str(tmp_path / "cache"),
         "--pretrain.epochs", "1", "--pretrain.batch_size", "16", "--pretrain.num_workers", "0", "--model.preset", "tiny", "--model.depth", "2", "--model.decoder_depth", "1",
         "--probe.epochs", "60", "--probe.num_workers", "0", "--embed.num_workers", "0"],
        cwd=tmp_path, env=script_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert "warning" not in result.stdout, result.stdout
    summary = json.loads((out / "summary.json").read_text())["steps"]
    spread = summary["embed"]["spread"]
    clips = len(WORDS) * len(VOICES) * 2
    assert spread["items"] == spread["distinct"] == clips and spread["collapsed_dims"] == 0, spread
    chance = 1 / len(WORDS)
    assert summary["probe"]["eval_items"] >= 16 and summary["probe"]["accuracy"] >= 3 * chance, summary["probe"]


def test_embedding_spread_tells_identical_embeddings_from_real_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    alike = torch.randn(1, 32, generator=generator).repeat(40, 1)
    assert embedding_spread(alike).collapsed and embedding_spread(alike).distinct == 1
    varied = torch.randn(40, 32, generator=generator)
    assert not embedding_spread(varied).collapsed and embedding_spread(varied).distinct == 40
    half = varied.clone()
    half[:, :16] = 3.0  # half the dimensions carry nothing
    assert embedding_spread(half).collapsed_dims == 16 and embedding_spread(half).collapsed


class SilentTones(ToneDataset):
    """Tones whose first ``silent`` items are digital silence."""

    silent = 8

    def load(self, index: int) -> torch.Tensor:
        clip = super().load(index)
        return torch.zeros_like(clip) if index < self.silent else clip


class SilentRoot(SilentTones, NeedsRootDataset):
    pass


def run_with(data: type, steps: tuple, argv: list[str]) -> int:
    torch.set_num_threads(1)
    pipeline = make_pipeline(steps, data=data)
    return run_pipeline(pipeline, Config, argv)


def test_constant_features_in_training_batches_are_named_with_the_step_and_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"), "--pretrain.epochs", "1",
            "--pretrain.batch_size", "32", "--pretrain.num_workers", "0"]
    assert run_with(SilentRoot, (PRETRAIN,), argv) == 0
    out = capsys.readouterr().out
    assert "[pretrain] warning: pretrain step 1: 8 of 32 items of SilentRoot had (near-)constant features" in out, out


def test_a_mostly_padded_window_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fbank = KaldiFbank(target_frames=200)
    # clips of 0.3 s against a 2 s window: 85% of each window is zero frames
    assert fbank.padded_share(torch.tensor([4800, 4800])) > 0.8
    assert fbank.padded_share(torch.tensor([40000])) == 0.0


class PartialFolds(NeedsRootDataset):
    """A partial ESC-50: folds of 11, 1, 16 and 2 items, fold 5 listed but absent."""

    listed_folds = [1, 2, 3, 4, 5]
    sizes = {1: 11, 2: 1, 3: 16, 4: 2}

    def __init__(self, **kwargs) -> None:
        super().__init__(**{**kwargs, "num_items": sum(self.sizes.values())})
        folds = [fold for fold, size in self.sizes.items() for _ in range(size)]
        self.records = [r.__class__(r.key, r.label, r.category, fold) for r, fold in zip(self.records, folds)]


def test_kfold_on_partial_folds_reports_weighted_mean_and_skipped_folds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pretrained = ["--kfold.max_folds", "5", "--kfold.epochs", "1", "--kfold.batch_size", "8",
                  "--kfold.num_workers", "0"]
    argv = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"), *pretrained]
    assert run_with(PartialFolds, (KFOLD,), argv) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["steps"]["kfold"]
    assert summary["folds_skipped"] == [5] and summary["folds"] == [1, 2, 3, 4]
    assert summary["eval_items_per_fold"] == {"1": 11, "2": 1, "3": 16, "4": 2}
    accuracies = summary["accuracy_per_fold"]
    weighted = sum(accuracies[f] * n for f, n in summary["eval_items_per_fold"].items()) / 30
    assert summary["accuracy_weighted_mean"] == pytest.approx(weighted)
    assert summary["accuracy_mean"] == pytest.approx(sum(accuracies.values()) / 4)
    assert "folds [5] of PartialFolds hold no items" in out and "hold no items: not evaluated" in out
    assert "fold_2: the evaluation set of PartialFolds holds 1 item" in out and "holds 1 item (fewer than 10" in out
    assert "weighted by fold size" in out


def test_an_evaluation_on_no_items_is_an_error_and_on_few_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage = make_stage(tmp_path / "run", section="probe")
    data = PartialFolds(root=str(tmp_path))
    with pytest.raises(UsageError, match=r"probe: evaluation folds \[5\] of PartialFolds holds no items"):
        check_eval_size(stage, "evaluation folds [5]", 0, 4, data)
    check_eval_size(stage, "evaluation folds [2]", 1, 4, data)
    check_eval_size(stage, "evaluation folds [1, 3]", 27, 4, data)
    out = capsys.readouterr().out
    assert out.count("warning") == 1 and "evaluation folds [2] of PartialFolds holds 1 item (fewer than 10" in out
    check_eval_size(stage, "fold 3", 16, 50, data)  # fewer items than classes
    assert "holds 16 items (fewer than 50 for 50 classes)" in capsys.readouterr().out


def test_a_clip_shorter_than_the_fft_beside_longer_ones_is_tiled_not_a_crash() -> None:
    from components.runtime import collate_signals
    from components.transforms.spectral import LogMel

    generator = torch.Generator().manual_seed(0)
    short, long = torch.randn(120, generator=generator), torch.randn(16000, generator=generator)
    signals, _, lengths = collate_signals([(short, 0), (long, 1)])
    features = LogMel(target_frames=50).eval()(signals, lengths)
    assert features.shape == (2, 1, 50, 80) and torch.isfinite(features).all()
    assert features[0].std() > 0.1  # the short clip's own frame, tiled: not padding
    torch.testing.assert_close(features[1], LogMel(target_frames=50).eval()(long[None])[0])
