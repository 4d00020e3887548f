"""The recipes learn: pre-training loss falls, fine-tuning separates an easy synthetic set, the
auxiliary losses train, and the embedding cache is hit and invalidated as it should be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.run_checkpoint import load_checkpoint_file
from components.metrics import read_metrics
from components.registry import recipe_registry
from test_runtime_helpers import ALL_STEPS, run_main

PRETRAIN, FINETUNE, EMBED = ALL_STEPS[0], ALL_STEPS[1], ALL_STEPS[2]


def _summary(out_dir: Path) -> dict:
    return json.loads((out_dir / "summary.json").read_text())["steps"]


def test_every_recipe_is_registered_with_a_keyword_only_schema() -> None:
    import inspect

    for name in ("mae_pretrain", "finetune", "linear_probe", "knn", "embed", "kfold"):
        parameters = list(inspect.signature(recipe_registry.get(name)).parameters.values())
        assert parameters[0].name == "stage" and parameters[0].kind is inspect.Parameter.POSITIONAL_ONLY
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty for p in parameters[1:])


@pytest.mark.slow
def test_pretraining_loss_decreases_on_synthetic_data(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"), "--pretrain.epochs", "8", "--pretrain.lr", "2e-3"]
    assert run_main(args, (PRETRAIN,)) == 0
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "pretrain") if r["kind"] == "train"]
    assert len(losses) == 32
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


@pytest.mark.slow
def test_auxiliary_infonce_and_uniformity_terms_train(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"), "--pretrain.epochs", "2",
            "--pretrain.infonce_weight", "0.5", "--pretrain.uniformity_weight", "0.1"]
    assert run_main(args, (PRETRAIN,)) == 0
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "pretrain") if r["kind"] == "train"]
    assert all({"recon", "infonce", "uniformity"} <= r.keys() for r in records)
    # single steps are noisy (random crops and masks): compare the first and last three
    first, last = (sum(r["infonce"] for r in part) / 3 for part in (records[:3], records[-3:]))
    assert last < first, [r["infonce"] for r in records]


@pytest.mark.slow
def test_finetuning_separates_an_easy_synthetic_set(tmp_path: Path) -> None:
    # 64 tones, 4 classes, held-out fold 4 (16 items); from scratch, at most 48 optimizer steps.
    args = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run"), "--data.num_items", "64",
            "--finetune.epochs", "8", "--finetune.lr", "3e-3", "--finetune.label_smoothing", "0.0"]
    assert run_main(args, (FINETUNE,)) == 0
    summary = _summary(tmp_path / "run")["finetune"]
    assert summary["steps"] <= 48 and summary["eval_folds"] == [4]
    assert summary["best_accuracy"] >= 0.9, summary
    best = load_checkpoint_file(tmp_path / "run" / "finetune" / "best.pt")
    assert best["best_metric"] == summary["best_accuracy"]


@pytest.mark.slow
def test_embedding_cache_is_hit_then_invalidated_by_a_new_checkpoint(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for seed in ("0", "1"):  # two different pre-trained encoders
        assert run_main(["--smoke", "--seed", seed, "--out-dir", str(tmp_path / f"pre{seed}")], (PRETRAIN,)) == 0

    def embed_with(checkpoint: Path, out: str) -> dict:
        args = ["--smoke", "--out-dir", str(tmp_path / out), "--embed.checkpoint", str(checkpoint), "--embed.cache_dir", str(cache)]
        assert run_main(args, (EMBED,)) == 0
        return _summary(tmp_path / out)["embed"]

    first = embed_with(tmp_path / "pre0" / "pretrain" / "last.pt", "e1")
    second = embed_with(tmp_path / "pre0" / "pretrain" / "last.pt", "e2")
    other = embed_with(tmp_path / "pre1" / "pretrain" / "last.pt", "e3")
    assert (first["cache_hit"], second["cache_hit"], other["cache_hit"]) == (False, True, False)
    assert len(list(cache.glob("*.pt"))) == 2
    import torch

    a = torch.load(tmp_path / "e1" / "embed" / "embeddings.pt", weights_only=True)
    b = torch.load(tmp_path / "e2" / "embed" / "embeddings.pt", weights_only=True)
    c = torch.load(tmp_path / "e3" / "embed" / "embeddings.pt", weights_only=True)
    assert torch.equal(a["embeddings"], b["embeddings"]) and not torch.equal(a["embeddings"], c["embeddings"])
    assert a["keys"][:2] == ["index:0", "index:1"] and a["labels"].shape == (32,) and a["folds"].min() >= 1
    # the embed output's interface: embeddings, labels, paths (and the spread of the embeddings)
    assert a["paths"] == a["keys"] and a["embeddings"].shape[0] == len(a["paths"])
    assert set(a["spread"]) == {"items", "dims", "mean_std", "collapsed_dims", "distinct"}


def test_embed_without_a_checkpoint_says_how_to_get_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--smoke", "--out-dir", str(tmp_path)], (EMBED,)) == 2
    err = capsys.readouterr().err
    assert "no encoder checkpoint" in err and "--embed.checkpoint" in err


def test_unknown_evaluation_folds_are_a_user_error_but_smoke_falls_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    probe = (ALL_STEPS[4],)
    args = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "real"), "--probe.eval_folds", "9"]
    assert run_main(args, probe) == 2
    assert "folds [9] do not exist; the data set has folds [1, 2, 3, 4]" in capsys.readouterr().err
    assert run_main(["--smoke", "--out-dir", str(tmp_path / "smoke"), "--probe.eval_folds", "9"], (PRETRAIN, *probe)) == 0
    assert "smoke data has folds [1, 2, 3, 4], not [9]: using the default split" in capsys.readouterr().out


def test_finetuning_starts_from_an_official_release_state_dict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from components.models.audiomae_pp import AudioMAEPlusPlus
    from components.models.official_weights import export_official_state_dict
    from test_runtime_helpers import ModelConfig

    model = AudioMAEPlusPlus(**{k: v for k, v in ModelConfig().__dict__.items()})
    torch.save({"model": export_official_state_dict(model)}, tmp_path / "official.pth")
    args = ["--smoke", "--out-dir", str(tmp_path / "run"), "--finetune.checkpoint", str(tmp_path / "official.pth")]
    assert run_main(args, (FINETUNE,)) == 0
    assert f"loaded {tmp_path / 'official.pth'} (" in capsys.readouterr().out
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    args[-1] = str(tmp_path / "other.pth")
    assert run_main(args, (FINETUNE,)) == 2
    assert "neither a checkpoint of this script nor an official one that fits" in capsys.readouterr().err


def test_finetuning_with_every_augmentation_and_layer_decay(tmp_path: Path) -> None:
    args = ["--smoke", "--out-dir", str(tmp_path), "--steps", "3", "--finetune.mixup_alpha", "0.4", "--finetune.freq_mask", "4",
            "--finetune.time_mask", "4", "--finetune.mask_t_prob", "0.25", "--finetune.drop_path", "0.1", "--finetune.layer_decay", "0.5"]
    assert run_main(args, (FINETUNE,)) == 0
    summary = _summary(tmp_path)["finetune"]
    assert summary["steps"] == 3 and summary["final_train_loss"] is not None
    optimizer = load_checkpoint_file(tmp_path / "finetune" / "last.pt")["optimizer"]
    scales = sorted({round(group["lr_scale"], 6) for group in optimizer["param_groups"]})
    assert scales[0] < scales[-1] == 1.0  # embeddings learn slowest, the head at the full rate


def test_explicit_train_and_eval_folds_are_kept_when_they_exist(tmp_path: Path) -> None:
    from components.recipes.finetune import resolve_split
    from test_runtime_helpers import make_stage

    stage = make_stage(tmp_path)
    dataset = stage.components.dataset()  # folds 1..4
    assert resolve_split(stage, dataset, [1, 2], [4]) == ([1, 2], [4])
    assert resolve_split(stage, dataset, [3], None) == ([3], [4])
    assert resolve_split(stage, dataset, None, [1]) == ([2, 3, 4], [1])


def test_a_fresh_kfold_run_forgets_the_fold_results_of_an_old_run(tmp_path: Path) -> None:
    stale = tmp_path / "kfold" / "fold_2" / "result.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"accuracy": 0.123}))
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--steps", "1", "--kfold.max_folds", "1"], (ALL_STEPS[5],)) == 0
    assert not stale.exists()  # an interrupted fresh run resumed later must not report it
    assert (tmp_path / "kfold" / "fold_1" / "result.json").is_file()


def test_steps_caps_training_stages_and_leaves_evaluations_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = (PRETRAIN, FINETUNE, ALL_STEPS[4], ALL_STEPS[5])
    args = ["--smoke", "--out-dir", str(tmp_path), "--steps", "1", "--kfold.max_folds", "1",
            "--pretrain.epochs", "3", "--finetune.epochs", "3"]
    assert run_main(args, steps) == 0
    summary = _summary(tmp_path)
    assert summary["pretrain"]["steps"] == summary["finetune"]["steps"] == 1
    assert summary["pretrain"]["total_steps"] > 1 and summary["finetune"]["total_steps"] > 1
    assert summary["probe"]["steps"] == summary["probe"]["total_steps"] > 1  # an evaluation: whole
    fold = summary["kfold"]["per_fold"]["1"]
    assert fold["steps"] == fold["total_steps"] > 1
    out = capsys.readouterr().out
    # the plan says that the cap stops the stage before its lr schedule ends, and how to fit it
    assert "[pretrain] --steps 1: pretrain stops at step 1 of" in out and "--fit-schedule" in out


def test_fit_schedule_lays_warm_up_and_cosine_over_the_capped_steps(tmp_path: Path) -> None:
    def learning_rates(out_dir: Path, *extra: str) -> list[float]:
        args = ["--smoke", "--out-dir", str(out_dir), "--steps", "4", "--pretrain.epochs", "4",
                "--pretrain.warmup_epochs", "2", "--pretrain.log_every", "1", *extra]
        assert run_main(args, (PRETRAIN,)) == 0
        return [r["lr"] for r in read_metrics(out_dir / "metrics.jsonl", "pretrain") if r["kind"] == "train"]

    capped, fitted = learning_rates(tmp_path / "capped"), learning_rates(tmp_path / "fitted", "--fit-schedule")
    assert len(capped) == len(fitted) == 4
    assert capped == sorted(capped) and capped[-1] < 0.5 * max(fitted)  # still warming up at the cap
    peak = fitted.index(max(fitted))
    assert 0 < peak < 3 and fitted[-1] < fitted[peak]  # warm-up, then the cosine, all within 4 steps


def test_zero_pretraining_epochs_leave_the_random_encoder_to_the_later_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = (PRETRAIN, EMBED)
    assert run_main(["--smoke", "--out-dir", str(tmp_path / "zero"), "--pretrain.epochs", "0"], steps) == 0
    assert "pre-training skipped" in capsys.readouterr().out
    summary = _summary(tmp_path / "zero")
    assert summary["pretrain"]["steps"] == summary["pretrain"]["total_steps"] == 0
    assert summary["embed"]["num_items"] > 0
    assert run_main(["--smoke", "--out-dir", str(tmp_path / "one"), "--pretrain.epochs", "1"], steps) == 0
    import torch

    zero, one = (load_checkpoint_file(tmp_path / name / "pretrain" / "last.pt")["model"] for name in ("zero", "one"))
    assert zero.keys() == one.keys() and any(not torch.equal(zero[k], one[k]) for k in zero)
    # the same seed gives the same initial encoder as the start of a pre-training run would
    assert run_main(["--smoke", "--out-dir", str(tmp_path / "again"), "--pretrain.epochs", "0"], steps) == 0
    again = load_checkpoint_file(tmp_path / "again" / "pretrain" / "last.pt")["model"]
    assert all(torch.equal(zero[k], again[k]) for k in zero)


def test_the_linear_probe_does_not_depend_on_an_embedding_cache_hit(tmp_path: Path) -> None:
    probe = ALL_STEPS[4]
    assert run_main(["--smoke", "--out-dir", str(tmp_path / "hit")], (PRETRAIN, EMBED, probe)) == 0
    assert run_main(["--smoke", "--out-dir", str(tmp_path / "miss")], (PRETRAIN, FINETUNE, probe)) == 0  # same stage index
    hit, miss = _summary(tmp_path / "hit")["probe"], _summary(tmp_path / "miss")["probe"]
    assert (hit["cache_hit"], miss["cache_hit"]) == (True, False)
    assert hit["final_loss"] == miss["final_loss"] and hit["accuracy"] == miss["accuracy"]


def test_a_step_after_one_that_ran_again_runs_afresh_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = (PRETRAIN, ALL_STEPS[4])
    args = ["--smoke", "--out-dir", str(tmp_path), "--pretrain.epochs", "3"]
    assert run_main(args, steps) == 0  # --smoke caps pre-training at 2 of its steps
    first = _summary(tmp_path)["probe"]
    capsys.readouterr()
    assert run_main([*args, "--resume", "--steps", "4"], steps) == 0  # pre-training continues
    out = capsys.readouterr().out
    assert "[probe] already completed" not in out and "[probe] an earlier step ran again" in out
    assert "embedding cache hit" not in out  # the probe embedded with the new encoder
    summary = _summary(tmp_path)
    assert summary["pretrain"]["steps"] == 4 and summary["probe"]["steps"] == first["steps"]
    assert run_main([*args, "--resume", "--steps", "4"], steps) == 0  # nothing changed: nothing runs
    assert capsys.readouterr().out.count("already completed; skipped") == 2


def test_zero_epochs_on_resume_give_the_fresh_encoder_not_the_folders_training(tmp_path: Path) -> None:
    import torch

    a = ["--smoke", "--out-dir", str(tmp_path / "a")]
    assert run_main([*a, "--pretrain.epochs", "3"], (PRETRAIN,)) == 0  # 2 steps trained, the stage capped
    assert run_main([*a, "--resume", "--steps", "3", "--pretrain.epochs", "0"], (PRETRAIN,)) == 0
    assert run_main(["--smoke", "--out-dir", str(tmp_path / "b"), "--pretrain.epochs", "0"], (PRETRAIN,)) == 0
    resumed, fresh = (load_checkpoint_file(tmp_path / name / "pretrain" / "last.pt")["model"] for name in ("a", "b"))
    assert all(torch.equal(resumed[k], fresh[k]) for k in fresh)


def test_resuming_under_another_fitted_schedule_says_the_lr_jumps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--smoke", "--out-dir", str(tmp_path), "--pretrain.epochs", "4", "--fit-schedule"]
    assert run_main([*args, "--steps", "2"], (PRETRAIN,)) == 0
    capsys.readouterr()
    assert run_main([*args, "--steps", "4", "--resume"], (PRETRAIN,)) == 0
    assert "warning: pretrain: the lr schedule was laid over 2 steps and is now laid over 4" in capsys.readouterr().out
