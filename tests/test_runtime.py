"""The runtime of the emitted script: flags, smoke overrides, user errors, data order, checkpoints, NaN guard."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.run_checkpoint import (
    CheckpointError,
    Checkpointer,
    atomic_torch_save,
    atomic_write,
    capture_rng_state,
    load_checkpoint_file,
    restore_rng_state,
)
from components.metrics import confusion_matrix, format_progress_line, read_metrics, write_json_atomic
from components.plots import pca_2d
from components.loop_support import LoopPlan, LoopSettings
from components.recipes.engine import WarmupCosineSchedule, warmup_cosine_lr
from components.errors import UsageError
from components.flags import parse_config
from components.runtime import NonFiniteLossError, ShardedEpochSampler, Step, StepResult, collate_signals, run_pipeline
from test_runtime_helpers import (
    ALL_STEPS,
    Config,
    LinearRegressor,
    LoopRun,
    RegressionObjective,
    ToneDataset,
    make_stage,
    make_pipeline,
    run_main,
)

PRETRAIN_ONLY = (ALL_STEPS[0],)


# ----------------------------------------------------------------------------- flags
def test_help_lists_every_flag_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_pipeline(make_pipeline(), Config, ["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for flag in ("--smoke", "--data-dir", "--download", "--out-dir", "--resume", "--device", "--dtype", "--compile",
                 "--seed", "--deterministic", "--steps", "--model.img_size", "--pretrain.epochs", "--kfold.max_folds"):
        assert flag in out, flag
    assert "--pretrain.epochs N (int, default: 2)" in out
    assert "--model.preset PRESET" in out and "one of tiny, base, large" in out


def test_flags_are_parsed_to_the_field_types() -> None:
    config = parse_config(make_pipeline(), Config, [
        "--model.img_size", "32", "8", "--model.patch_size", "4,8", "--model.embed_dim", "none",
        "--model.preset", "base", "--pretrain.lr", "0.5", "--pretrain.clip_grad", "None", "--steps", "3",
        "--deterministic", "--compile", "false", "--data-dir", "/x", "--kfold.max_folds", "3",
    ])
    assert config.model.img_size == (32, 8) and config.model.patch_size == (4, 8)
    assert config.model.embed_dim is None and config.model.preset == "base"
    assert config.pretrain.lr == 0.5 and config.pretrain.clip_grad is None
    assert config.run.steps == 3 and config.run.deterministic is True and config.run.compile is False
    assert config.run.data_dir == "/x" and config.kfold.max_folds == 3
    assert config.pretrain.epochs == Config().pretrain.epochs  # untouched fields keep their defaults


def test_smoke_overrides_sit_between_defaults_and_explicit_flags() -> None:
    pipeline = make_pipeline()
    assert parse_config(pipeline, Config, []).pretrain.batch_size == 8
    assert parse_config(pipeline, Config, []).run.steps is None
    smoke = parse_config(pipeline, Config, ["--smoke"])
    assert smoke.pretrain.batch_size == 4 and smoke.run.steps == 2
    explicit = parse_config(pipeline, Config, ["--pretrain.batch_size", "6", "--smoke", "--steps", "5"])
    assert explicit.pretrain.batch_size == 6 and explicit.run.steps == 5


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--pretrain.epochs", "abc"], "expected int"),
        (["--model.preset", "huge"], "expected one of tiny, base, large"),
        (["--model.img_size", "16"], "expected 2 values"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--pretrain.epoks", "3"], "(did you mean --pretrain.epochs?)"),
        (["--dtype", "fp8"], "--dtype must be"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--device", "cuda:0"], "CUDA is not available"),
        (["--model.img_size", "32", "16"], "set --model.img_size 16 16"),
        (["--pretrain.log_every", "0"], "--pretrain.log_every must be >= 1"),
        (["--pretrain.lr", "-1"], "--pretrain.lr is out of range: -1.0"),
        (["--transform.sample_rate", "16000", "--transform.f_max", "8000"], "set --data.sample_rate and --transform.sample_rate"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_message(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    if "cuda" in argv[-1] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert run_main(["--smoke", "--out-dir", str(tmp_path), *argv], PRETRAIN_ONLY) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one message, not the usage of every flag


def test_missing_data_root_names_the_fix(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = run_main(["--out-dir", str(tmp_path), "--data-dir", str(tmp_path / "absent")], PRETRAIN_ONLY)
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "--data-dir" in err and "--download" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "error",
    [
        FileExistsError("data/x exists but holds no meta/esc50.csv; remove it or choose another root"),
        ConnectionResetError("the download was cut off"),
        ModuleNotFoundError("reading RadioML 2018 needs h5py: pip install h5py"),
    ],
)
def test_a_data_set_that_cannot_be_built_is_one_line(error: Exception, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    class Broken(ToneDataset):
        def __init__(self, **kwargs: object) -> None:
            raise error

    assert run_pipeline(make_pipeline(PRETRAIN_ONLY, data=Broken), Config, ["--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: data set Broken: {error}") and len(err.strip().splitlines()) == 1

def test_world_size_without_torchrun_is_a_user_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    assert run_main(["--smoke", "--out-dir", str(tmp_path)], PRETRAIN_ONLY) == 2
    err = capsys.readouterr().err
    assert "MASTER_ADDR" in err and "launch with torchrun" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- data order
@settings(deadline=None)
@given(num_items=st.integers(1, 40), world=st.integers(1, 4), epoch=st.integers(0, 5), shuffle=st.booleans(), drop_last=st.booleans())
def test_sharded_sampler_deals_one_epoch_evenly(num_items: int, world: int, epoch: int, shuffle: bool, drop_last: bool) -> None:
    shards = [
        ShardedEpochSampler(num_items, rank=r, world_size=world, seed=3, epoch=epoch, shuffle=shuffle, drop_last=drop_last).shard()
        for r in range(world)
    ]
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    seen = [i for shard in shards for i in shard]
    if drop_last and num_items >= world:
        assert len(set(seen)) == len(seen) == num_items - num_items % world
    else:
        assert set(seen) == set(range(num_items))
    again = ShardedEpochSampler(num_items, rank=0, world_size=world, seed=3, epoch=epoch, shuffle=shuffle, drop_last=drop_last)
    assert again.shard() == shards[0]  # a pure function of (seed, epoch): what resume relies on


@settings(deadline=None)
@given(num_items=st.integers(1, 30), start=st.integers(0, 30))
def test_sampler_start_skips_exactly_the_seen_prefix(num_items: int, start: int) -> None:
    full = list(ShardedEpochSampler(num_items, seed=1, epoch=2))
    resumed = ShardedEpochSampler(num_items, seed=1, epoch=2, start=start)
    assert list(resumed) == full[start:] and len(resumed) == len(full[start:])


def test_collate_pads_unequal_signals_and_says_where_each_ends() -> None:
    signals, labels, lengths = collate_signals([(torch.ones(3), 1), (torch.ones(5), 2)])
    assert signals.shape == (2, 5) and signals[0, 3:].eq(0).all() and labels.tolist() == [1, 2]
    assert lengths.tolist() == [3, 5]


# ----------------------------------------------------------------------------- schedule
@settings(deadline=None)
@given(total=st.integers(1, 500), warmup_share=st.floats(0, 1), base=st.floats(1e-5, 1.0), min_share=st.floats(0, 0.5))
def test_warmup_cosine_rises_then_decays_to_min(total: int, warmup_share: float, base: float, min_share: float) -> None:
    warmup = int(total * warmup_share)
    min_lr = base * min_share
    rates = [warmup_cosine_lr(s, base_lr=base, min_lr=min_lr, warmup_steps=warmup, total_steps=total) for s in range(total)]
    # the official rule (util/lr_sched.py): base * step / warmup, so the first step takes lr 0
    assert rates[:warmup] == [base * s / warmup for s in range(warmup)]
    assert all(0 <= r <= base * (1 + 1e-9) for r in rates[:warmup])
    assert all(a <= b + 1e-12 for a, b in zip(rates[:warmup], rates[1:warmup]))
    assert all(a + 1e-12 >= b for a, b in zip(rates[warmup:], rates[warmup + 1 :]))
    assert all(r >= min_lr - 1e-12 for r in rates[warmup:])
    assert warmup_cosine_lr(total, base_lr=base, min_lr=min_lr, warmup_steps=warmup, total_steps=total) == pytest.approx(min_lr)


def test_loop_plan_caps_steps_and_shrinks_batches_for_small_sets() -> None:
    plan = LoopPlan.make(30, LoopSettings(epochs=3, batch_size=4, accum_steps=2), world_size=2, max_steps=4)
    assert (plan.batch_size, plan.steps_per_epoch, plan.total_steps, plan.run_until) == (4, 1, 3, 3)
    tiny = LoopPlan.make(3, LoopSettings(epochs=2, batch_size=8, accum_steps=4), world_size=1, max_steps=None)
    assert (tiny.batch_size, tiny.accum_steps, tiny.steps_per_epoch, tiny.total_steps) == (3, 1, 1, 2)




@settings(deadline=None)
@given(num_items=st.integers(1, 64), world=st.integers(1, 4), batch_size=st.integers(1, 16), accum=st.integers(1, 4))
def test_the_loop_plan_never_asks_for_more_batches_than_a_rank_gets(num_items: int, world: int, batch_size: int, accum: int) -> None:
    plan = LoopPlan.make(num_items, LoopSettings(epochs=1, batch_size=batch_size, accum_steps=accum), world_size=world, max_steps=None)
    for rank in range(world):
        items = len(ShardedEpochSampler(num_items, rank=rank, world_size=world, drop_last=plan.drop_last))
        assert items // plan.batch_size >= plan.steps_per_epoch * plan.accum_steps >= 1

def test_the_learning_rate_rule_counts_the_samples_a_step_really_takes(tmp_path: Path) -> None:
    from components.distributed import DistInfo
    from components.recipes.engine import effective_batch_size

    one, two = make_stage(tmp_path), make_stage(tmp_path, dist_info=DistInfo(rank=0, world_size=2))
    assert effective_batch_size(one.run, 8, 2, 1000) == 16 and effective_batch_size(two.run, 8, 2, 1000) == 32
    assert effective_batch_size(two.run, 8, 1, 10) == 10  # each rank's batch is its 5-item shard
    assert effective_batch_size(one.run, 32, 4, 100) == 96  # 3 batches an epoch: accumulation over 3
    plan = LoopPlan.make(100, LoopSettings(epochs=1, batch_size=32, accum_steps=4), world_size=1, max_steps=None)
    assert plan.samples_per_step == 96

# ----------------------------------------------------------------------------- checkpoints
def test_checkpoints_keep_the_last_k_and_link_last_and_best(tmp_path: Path) -> None:
    manager = Checkpointer(tmp_path, spec_name="s", spec_hash="h", model_config={"a": 1}, keep_last=2)
    (tmp_path / ".step_00000009.pt.abc.tmp").write_bytes(b"torn")  # what a kill mid-write leaves
    manager = Checkpointer(tmp_path, spec_name="s", spec_hash="h", model_config={"a": 1}, keep_last=2)
    assert not list(tmp_path.glob(".*.tmp"))
    for step in range(1, 6):
        manager.save({"model": {"w": torch.full((2,), float(step))}}, step=step, best=step == 3)
    assert [p.name for p in manager.step_files()] == ["step_00000004.pt", "step_00000005.pt"]
    assert manager.load_last()["model"]["w"].tolist() == [5.0, 5.0]
    assert load_checkpoint_file(manager.best_path)["step"] == 3  # still readable after its step file was pruned
    manager.clear()
    assert not list(tmp_path.glob("*.pt"))


def test_checkpoint_of_another_spec_or_model_is_refused(tmp_path: Path) -> None:
    Checkpointer(tmp_path, spec_name="s", spec_hash="h", model_config={"a": 1}).save({"model": {}}, step=1)
    for other in ({"spec_name": "t"}, {"spec_hash": "g"}, {"model_config": {"a": 2}}):
        kwargs = {"spec_name": "s", "spec_hash": "h", "model_config": {"a": 1}, **other}
        with pytest.raises(CheckpointError, match="--out-dir"):
            Checkpointer(tmp_path, **kwargs).load_last()


class _Payload:
    def __reduce__(self):  # what a malicious pickle would do
        return (os.system, ("echo pwned",))


def test_loading_is_weights_only_and_rejects_foreign_files(tmp_path: Path) -> None:
    torch.save({"format": "sigmae-checkpoint/1", "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="only checkpoints written by this script"):
        load_checkpoint_file(tmp_path / "evil.pt")
    atomic_torch_save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint written by a sigmae script"):
        load_checkpoint_file(tmp_path / "plain.pt")


def test_json_summary_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    write_json_atomic({"b": 1, "a": [1.5]}, path)
    assert path.read_text(encoding="utf-8") == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'

    def fails_midway(handle) -> None:
        handle.write(b"{half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fails_midway)
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1.5], "b": 1}  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_rng_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    import random

    atomic_torch_save({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random())
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_resume_with_another_model_config_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--steps", "1"], PRETRAIN_ONLY) == 0
    code = run_main(["--smoke", "--out-dir", str(tmp_path), "--resume", "--model.embed_dim", "64"], PRETRAIN_ONLY)
    err = capsys.readouterr().err
    assert code == 2 and "holds a run with other settings (model.embed_dim: 32 -> 64)" in err and "Traceback" not in err


def test_resume_of_another_specs_run_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--steps", "1"], PRETRAIN_ONLY) == 0
    other = make_pipeline(PRETRAIN_ONLY, name="other_spec")
    code = run_pipeline(other, Config, ["--smoke", "--out-dir", str(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "holds a run of spec 'tones'" in err


# ----------------------------------------------------------------------------- NaN guard
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    torch.manual_seed(0)
    model = LinearRegressor()
    objective = RegressionObjective(model, nan_from=4)
    loop = LoopRun(
        stage, model=model, objective=objective, dataset=ToneDataset(num_items=32),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01), settings=LoopSettings(epochs=4, batch_size=4, checkpoint_every=1),
        lr_at=WarmupCosineSchedule(0.01),
    )  # no --steps cap for this check
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        loop.run()
    saved = load_checkpoint_file(loop.checkpointer.last_path)
    assert saved["step"] == 3
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step was never applied


def test_nan_loss_in_a_pipeline_exits_1_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = make_pipeline(PRETRAIN_ONLY)
    pipeline = type(pipeline)(**{**pipeline.__dict__, "smoke": {"data": {"noise": float("nan")}}})
    assert run_pipeline(pipeline, Config, ["--smoke", "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "the loss became nan at step 1" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- reporting
def test_metrics_file_keeps_the_last_record_per_step(tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    for step, loss in ((1, 3.0), (2, 2.0), (2, 1.5), (3, 1.0)):  # step 2 repeated, as after a resume
        stage.metrics.log("toy", step, {"loss": loss})
    (tmp_path / "metrics.jsonl").open("a").write('{"section": "toy", "st')  # cut short by a kill
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl", "toy")] == [(1, 3.0), (2, 1.5), (3, 1.0)]


def test_progress_line_and_confusion_matrix_and_pca() -> None:
    line = format_progress_line("pretrain", 12, 100, {"loss": 0.5, "lr": 1e-4}, 321.0, 3725.0, 1.25)
    assert line == "[pretrain] step 12/100  loss 0.5000  lr 1.00e-04  321.0 samples/s  ETA 1:02:05  mem 1.2 GB"
    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    points = torch.randn(50, 2) * torch.tensor([5.0, 1.0]) @ torch.linalg.qr(torch.randn(2, 2))[0] + 3.0
    embedded = torch.cat([points, torch.zeros(50, 3)], dim=1)
    projected = pca_2d(embedded)
    assert projected.shape == (50, 2) and projected.mean(0).abs().max() < 1e-4
    assert projected[:, 0].var() > projected[:, 1].var()


def test_smoke_run_of_every_recipe_writes_summaries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out or (tmp_path / "plots").is_dir()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["steps"]) == {"pretrain", "finetune", "embed", "knn", "probe", "kfold"}
    assert summary["steps"]["pretrain"]["steps"] == 2 and summary["steps"]["finetune"]["steps"] == 2
    assert summary["steps"]["kfold"]["folds"] == [1, 2]
    # Each fold's steps start at 1 again: they are logged under a section of their own. --steps
    # (2 under --smoke) caps training stages only: k-fold, an evaluation, runs every fold whole.
    fold_steps = {s: [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", s) if r["kind"] == "train"] for s in ("kfold/fold_1", "kfold/fold_2")}
    per_fold = summary["steps"]["kfold"]["per_fold"]
    assert fold_steps == {f"kfold/fold_{f}": list(range(1, per_fold[f]["total_steps"] + 1)) for f in ("1", "2")}
    assert all(r["steps"] == r["total_steps"] > 2 for r in per_fold.values())
    assert summary["steps"]["knn"]["cache_hit"] and not summary["steps"]["embed"]["cache_hit"]
    assert (tmp_path / "pretrain" / "last.pt").is_file() and (tmp_path / "finetune" / "best.pt").is_file()
    assert torch.load(tmp_path / "embed" / "embeddings.pt", weights_only=True)["embeddings"].shape == (32, 32)
    state = json.loads((tmp_path / "pipeline_state.json").read_text())
    assert state["completed"]["pretrain"]["handoff"] == {"encoder_checkpoint": str(tmp_path / "pretrain" / "last.pt")}
    # A resumed run of a finished pipeline skips every step.
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--resume"]) == 0
    assert capsys.readouterr().out.count("already completed") == 6


@pytest.mark.parametrize("key", ["handoff", "state"], ids=["handoff", "earlier-state-file"])
def test_a_skipped_step_still_hands_its_checkpoint_on(tmp_path: Path, key: str) -> None:
    """--resume skips the finished pre-training; fine-tuning, run again with a new setting, starts
    from the encoder the skipped step handed on (also from a pipeline_state.json that calls it "state")."""
    steps = ALL_STEPS[:2]  # pretrain, finetune
    assert run_main(["--smoke", "--out-dir", str(tmp_path)], steps) == 0
    state_path = tmp_path / "pipeline_state.json"
    record = json.loads(state_path.read_text())
    record["completed"]["pretrain"][key] = record["completed"]["pretrain"].pop("handoff")
    state_path.write_text(json.dumps(record))
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--resume", "--finetune.drop_path", "0.2"], steps) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())["steps"]
    assert summary["finetune"]["encoder"] == str(tmp_path / "pretrain" / "last.pt")


def test_usage_error_class_is_exported() -> None:
    assert issubclass(UsageError, Exception) and Step("x", lambda stage: StepResult({})).section == "x"


def test_a_recipe_that_returns_no_step_result_is_named_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def old_style_recipe(stage, /, **settings):
        return {"accuracy": 1.0}  # the summary alone, as recipes returned it before StepResult

    pipeline = make_pipeline((Step("pretrain", old_style_recipe),))
    assert run_pipeline(pipeline, Config, ["--smoke", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "step pretrain: recipe old_style_recipe returned a dict; a recipe returns StepResult(summary, Handoff(...))" in err
    assert "Traceback" not in err


def test_a_stage_cut_short_by_steps_continues_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "run")]
    assert run_main([*args, "--steps", "3"], PRETRAIN_ONLY) == 0
    assert run_main([*args, "--steps", "6", "--resume"], PRETRAIN_ONLY) == 0
    out = capsys.readouterr().out
    assert f"resumed from {tmp_path / 'run' / 'pretrain' / 'last.pt'} at step 3" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["steps"]["pretrain"]
    assert (summary["steps"], summary["resumed_from"]) == (6, 3)


def test_a_stop_at_an_epoch_end_evaluates_after_the_restart(tmp_path: Path) -> None:
    from components.runtime import StopRequested

    def make_loop(argv: list[str], calls: list[int], stop_at: int | None) -> LoopRun:
        stage = make_stage(tmp_path, ["--steps", "100", *argv])
        torch.manual_seed(0)
        model = LinearRegressor()

        def on_step(step: int) -> None:
            if step == stop_at:
                stage.stop.request("SIGTERM")

        def evaluate(epoch: int) -> dict[str, float]:
            calls.append(epoch)
            return {"accuracy": 0.5 + 0.1 * epoch}

        return LoopRun(
            stage, model=model, objective=RegressionObjective(model),
            dataset=ToneDataset(num_items=32), optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
            settings=LoopSettings(epochs=2, batch_size=4, checkpoint_every=100), lr_at=WarmupCosineSchedule(0.01),
            evaluate=evaluate, on_step=on_step,
        )

    calls: list[int] = []
    with pytest.raises(StopRequested, match="stopped by SIGTERM at step 8"):
        # The flag set after step 7 is read during step 8, the last step of epoch 1 (8 steps per epoch).
        make_loop([], calls, stop_at=7).run()
    assert calls == [] and load_checkpoint_file(tmp_path / "toy" / "last.pt")["pending_eval"]
    result = make_loop(["--resume"], calls, stop_at=None).run()
    assert calls == [0, 1] and result.step == 16 and result.best_metric == pytest.approx(0.6)
    assert load_checkpoint_file(tmp_path / "toy" / "best.pt")["step"] == 16


def test_a_fresh_run_in_a_used_folder_forgets_the_old_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--smoke", "--out-dir", str(tmp_path)], PRETRAIN_ONLY) == 0
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--steps", "1"], PRETRAIN_ONLY) == 0
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "pretrain")]
    assert steps == [1]
    capsys.readouterr()
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--steps", "1", "--resume"], PRETRAIN_ONLY) == 0
    assert "already completed" in capsys.readouterr().out


def test_a_fresh_run_clears_old_tensorboard_events_and_resume_keeps_them(tmp_path: Path) -> None:
    old_events = tmp_path / "tensorboard" / "events.out.tfevents.1.old-run"
    old_events.parent.mkdir()
    old_events.write_bytes(b"old run")
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--steps", "1"], PRETRAIN_ONLY) == 0
    assert not old_events.exists()
    old_events.parent.mkdir(exist_ok=True)
    old_events.write_bytes(b"this run")
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--steps", "1", "--resume"], PRETRAIN_ONLY) == 0
    assert old_events.read_bytes() == b"this run"


def test_data_dir_and_download_reach_the_data_set_only_if_it_takes_them(tmp_path: Path) -> None:
    from test_runtime_helpers import NeedsRootDataset

    received: list[dict] = []

    class RecordingDataset(NeedsRootDataset):
        def __init__(self, root: str = "x", download: bool = False, sample_rate: int = 8000, folds: list[int] | None = None) -> None:
            received.append({"root": root, "download": download, "folds": folds})
            super().__init__(root=root, download=download, sample_rate=sample_rate, folds=folds)

    pipeline = make_pipeline(PRETRAIN_ONLY)
    pipeline = type(pipeline)(**{**pipeline.__dict__, "data": RecordingDataset})
    args = ["--out-dir", str(tmp_path / "run"), "--steps", "1", "--data-dir", str(tmp_path), "--download"]
    assert run_pipeline(pipeline, Config, args) == 0
    assert received == [{"root": str(tmp_path), "download": True, "folds": None}]
    assert run_pipeline(pipeline, Config, [*args, "--data.folds", "2", "3"]) == 0
    assert received[-1]["folds"] == [2, 3]


def test_weight_decay_skips_biases_and_norms_but_decays_tokens() -> None:
    from components.models.audiomae_pp import AudioMAEPlusPlus
    from components.recipes.engine import param_groups_weight_decay

    model = AudioMAEPlusPlus(preset="tiny", img_size=(16, 16), patch_size=(4, 8), embed_dim=16, depth=1, num_heads=2,
                             decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    no_decay, decay = param_groups_weight_decay(model, 0.05)  # timm's order and rule, as official pre-training
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"norm.weight", "norm.bias", "patch_embed.proj.bias"} <= skipped
    assert {"cls_token", "mask_token"} <= {names[id(p)] for p in decay["params"]}
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == sum(1 for _ in model.parameters())
    # opt-in: timm's fine-tuning convention leaves the model's tokens undecayed
    no_decay, _ = param_groups_weight_decay(model, 0.05, model.no_weight_decay())
    assert {"cls_token", "mask_token"} <= {names[id(p)] for p in no_decay["params"]}


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_runs_train_with_finite_losses(dtype: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--dtype", dtype], ALL_STEPS[:2]) == 0
    assert f"dtype {dtype}" in capsys.readouterr().out
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert len(losses) == 4 and all(loss == loss and loss < 100 for loss in losses)
    if dtype == "fp16":  # the gradient scaler's state travels with the checkpoint
        assert load_checkpoint_file(tmp_path / "pretrain" / "last.pt")["scaler"]["scale"] > 0


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bf16_on_gpus_and_on_cpus_with_native_bf16(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from components import runtime

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    cpu = torch.device("cpu")
    assert runtime.cpu_has_native_bf16() is native
    assert runtime.resolve_amp_dtype("auto", cpu) == (torch.bfloat16 if native else None)
    assert runtime.resolve_amp_dtype("fp32", cpu) is None  # an explicit flag wins
    assert runtime.resolve_amp_dtype("bf16", cpu) == torch.bfloat16
    assert runtime.resolve_amp_dtype("auto", torch.device("mps")) is None
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert runtime.cpu_has_native_bf16() is False  # a torch without the probes: float32


@pytest.mark.slow
def test_compile_trains_the_same_steps_and_saves_plain_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--compile``: the compiled objective takes the steps the eager one takes (same losses
    up to kernel fusion) and the checkpoint holds the plain model's keys (no ``_orig_mod.``)."""
    import torch._inductor.config as inductor_config

    # Inductor draws torch.rand from its own generator; eager's stream gives both runs the same masks.
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert run_main(["--smoke", "--out-dir", str(eager), "--dtype", "fp32"], ALL_STEPS[:1]) == 0
    assert run_main(["--smoke", "--out-dir", str(compiled), "--dtype", "fp32", "--compile"], ALL_STEPS[:1]) == 0

    def losses(out: Path) -> list[float]:
        return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]

    assert len(losses(compiled)) == len(losses(eager)) > 0
    for got, want in zip(losses(compiled), losses(eager)):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    weights = load_checkpoint_file(compiled / "pretrain" / "last.pt")["model"]
    assert weights.keys() == load_checkpoint_file(eager / "pretrain" / "last.pt")["model"].keys()
    assert not any("_orig_mod" in key for key in weights)
