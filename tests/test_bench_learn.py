"""bench/learn.py at a tiny scale: word synthesis, the speaker-disjoint split, the baseline, the table.

The emitted script's runs are not exercised here (minutes); the bench's own code is.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys
import wave
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_learn", ROOT / "bench" / "learn.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_learn"] = module
    spec.loader.exec_module(module)
    return module


learn = load_bench()

needs_tts = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are needed to synthesise the words",
)


def test_split_holds_out_whole_voices_spread_over_the_list() -> None:
    train, held = learn.split_voices(12, 4)
    assert held == [3, 6, 9, 12]
    assert sorted(train + held) == list(range(1, 13)) and not set(train) & set(held)
    assert learn.split_voices(3, 1) == ([1, 2], [3])
    with pytest.raises(ValueError):
        learn.split_voices(3, 3)


@needs_tts
def test_synthesised_words_are_16k_speech_with_one_fold_per_voice(
    tmp_path: Path,
) -> None:
    words, voices = ["yes", "no"], list(learn.VOICES[:2])
    clips, seconds = learn.make_dataset(tmp_path, words, voices, workers=2)
    per_voice = len(words) * len(learn.SPEEDS) * len(learn.PITCHES)
    assert len(clips) == len(voices) * per_voice and seconds > 0
    rows = list(csv.DictReader((tmp_path / "clips.csv").open()))
    assert [r["filepath"] for r in rows] == [c.path for c in clips]
    fold_of_voice: dict[str, set[str]] = {}
    for row in rows:
        voice = Path(row["filepath"]).name.split("_s")[0]
        fold_of_voice.setdefault(voice, set()).add(row["fold"])
        assert (
            row["label"] in words and Path(row["filepath"]).parent.name == row["label"]
        )
    assert all(
        len(folds) == 1 for folds in fold_of_voice.values()
    )  # one voice, one fold
    assert len({next(iter(f)) for f in fold_of_voice.values()}) == len(voices)
    for clip in clips[:: len(learn.PITCHES)]:
        with wave.open(str(tmp_path / clip.path)) as handle:
            assert handle.getframerate() == 16000 and handle.getnchannels() == 1
            assert 0.1 < handle.getnframes() / 16000 < 1.5  # a word, silence trimmed
        signal = learn.read_wav(tmp_path / clip.path)
        assert signal.abs().max() > 0.05  # speech, not silence
    # a complete set is reused, not synthesised again
    assert learn.make_dataset(tmp_path, words, voices)[1] == 0.0

    spec = learn.load_spec()
    features = learn.logmel_features(tmp_path, clips, spec, {})
    assert features.shape == (len(clips), spec["transform"]["with"]["n_mels"])
    assert torch.isfinite(features).all() and features.std(dim=0).mean() > 0.01
    labels = torch.tensor([words.index(c.word) for c in clips])
    folds = torch.tensor([c.fold for c in clips])
    train, held = folds == 1, folds == 2
    accuracy = learn.logistic_regression(
        features[train], labels[train], features[held], labels[held], 2
    )
    assert 0.0 <= accuracy <= 1.0


def test_logistic_regression_and_knn_separate_separable_data() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=generator) * 4
    y = torch.arange(3).repeat(40)
    x = centres[y] + torch.randn(120, 8, generator=generator)
    assert learn.logistic_regression(x[:90], y[:90], x[90:], y[90:], 3) > 0.9
    assert learn.knn_accuracy(x[:90], y[:90], x[90:], y[90:], 3, k=5) > 0.9
    # labels that carry nothing give chance-level accuracy, not a perfect one
    shuffled = y[torch.randperm(120, generator=generator)]
    assert (
        learn.logistic_regression(x[:90], shuffled[:90], x[90:], shuffled[90:], 3) < 0.7
    )


def test_table_and_goal_checks() -> None:
    rows = {
        "logmel": {"name": "log-mel", "logreg": 0.8, "knn": 0.7},
        "random": {
            "name": "random",
            "probe": 0.5,
            "logreg": 0.55,
            "knn": 0.4,
            "finetune": 0.6,
        },
        "mae": {
            "name": "mae",
            "probe": 0.6,
            "logreg": 0.65,
            "knn": 0.3,
            "finetune": 0.9,
        },
    }
    table = learn.format_table(list(rows.values()))
    lines = table.splitlines()
    assert len(lines) == 5 and lines[2].startswith("| log-mel |")
    assert "| — | 80.0 | 70.0 | — |" in lines[2] and lines[4].endswith(
        "| 60.0 | 65.0 | 30.0 | 90.0 |"
    )
    checks = dict(learn.goal_checks(rows))
    assert list(checks.values()) == [True, False, True, True]
    rows["mae"]["finetune"] = None
    assert list(dict(learn.goal_checks(rows)).values())[2:] == [None, None]


def test_plan_gives_half_the_time_to_pretraining_and_scales_warmup() -> None:
    spec = learn.load_spec()
    rates = learn.Rates(pretrain_s=0.1, finetune_s=0.2, embed_s_per_item=0.001)
    plan = learn.plan_steps(
        spec, {}, rates, seconds_left=600, train_items=864, eval_items=432, threads=2
    )
    short = learn.plan_steps(
        spec, {}, rates, seconds_left=120, train_items=864, eval_items=432, threads=2
    )
    assert plan.pretrain_epochs > short.pretrain_epochs >= 1
    assert plan.pretrain_steps == plan.pretrain_epochs * (864 // 32)
    pre = next(s for s in spec["recipe"] if s["name"] == "pretrain")["with"]
    assert plan.pretrain_warmup == pytest.approx(
        plan.pretrain_epochs * pre["warmup_epochs"] / pre["epochs"], abs=1e-3
    )
    pretrain_s = plan.pretrain_steps * rates.pretrain_s
    finetune_s = 2 * plan.finetune_steps * rates.finetune_s
    assert (
        0.95 < pretrain_s / finetune_s < 1.3
    )  # half vs a quarter each (evaluation aside)
    assert plan.estimated_s <= 600 * 1.05
    tiny = learn.plan_steps(
        spec, {}, rates, seconds_left=1, train_items=864, eval_items=432, threads=2
    )
    assert tiny.pretrain_epochs == tiny.finetune_epochs == 1 and tiny.notes


def test_flags_reach_the_script_as_its_own_flags() -> None:
    flags = learn.parse_flags(
        ["pretrain.norm_pix_loss=true", "model.depth=2", "probe.eval_folds=3,6"]
    )
    assert learn.flag_args(flags) == [
        "--pretrain.norm_pix_loss",
        "true",
        "--model.depth",
        "2",
        "--probe.eval_folds",
        "3",
        "6",
    ]
    assert learn.section_settings(learn.load_spec(), flags, "model")["depth"] == 2
    with pytest.raises(SystemExit):
        learn.parse_flags(["depth=2"])


def test_init_spread_covers_the_main_seed_and_the_extra_ones() -> None:
    main = {"probe": 0.7, "logreg": 0.72, "knn": 0.5}
    extra = [
        {"seed": 1, "probe": 0.6, "logreg": 0.65, "knn": 0.55},
        {"seed": 2, "probe": 0.66, "knn": 0.4},
    ]
    spread = learn.init_spread(main, extra, seed=0)
    assert spread["seeds"] == [0, 1, 2]
    assert spread["range"] == {
        "probe": (0.6, 0.7),
        "logistic regression": (0.65, 0.72),
        "k-NN": (0.4, 0.55),
    }
    assert learn.init_spread(main, []) is None
