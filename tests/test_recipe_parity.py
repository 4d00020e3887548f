"""The official AudioMAE / AudioMAE++ optimizer step, restated, and the project's recipes checked against it.

Restated from reading the official training code (our own small functions below, not copies):

- facebookresearch/AudioMAE ``main_pretrain.py`` 237-255: ``lr = blr * eff_batch / 256`` with
  ``eff_batch = batch_size * accum_iter * world_size`` unless ``--lr`` is given; parameter groups
  ``timm.optim.optim_factory.add_weight_decay(model, weight_decay)`` (timm 0.3.2: no decay for
  1-d parameters and ``*.bias``, empty skip list, so ``cls_token`` / ``mask_token`` *are*
  decayed; fixed sin-cos tables are frozen); ``AdamW(groups, lr, betas=(0.9, 0.95))`` (eps 1e-8).
- SarthakYadav/audiomae-plusplus-official ``train_mae_spec.py`` 138-149: the same, written as
  ``accum * learning_rate * batch_size * world_size / 256`` and timm's newer
  ``param_groups_weight_decay(model, wd)`` (``ndim <= 1`` or ``*.bias``, empty skip list);
  ``clip_grad_value`` from the config (none in the shipped configs ``configs/common.py``).
- ``engine_pretrain.py`` 34-74 / ``engine_finetune.py`` 38-70 / AudioMAE++ ``src/mae_engine.py``
  30-55: per iteration, at every ``data_iter_step % accum_iter == 0``,
  ``adjust_learning_rate(optimizer, data_iter_step / len(data_loader) + epoch)``; the loss is
  divided by ``accum_iter``; the optimizer steps (and grads are zeroed) after every
  ``accum_iter``-th micro-batch; AudioMAE zeroes the gradients at the start of every epoch, so
  the micro-batches of an incomplete last window are computed and thrown away.
- ``util/lr_sched.py`` 9-20 (same in AudioMAE++ ``src/lr_sched.py`` and facebookresearch/mae):
  ``lr * epoch / warmup_epochs`` below ``warmup_epochs``, else ``min_lr + (lr - min_lr) / 2 *
  (1 + cos(pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))``; a group with
  ``lr_scale`` gets ``lr * lr_scale``.
- ``util/misc.py`` 251-271 ``NativeScalerWithGradNormCount``: ``scaler.scale(loss).backward()``;
  on an update step ``unscale_`` then ``clip_grad_norm_(parameters, clip_grad)`` when
  ``clip_grad`` is not None, then ``scaler.step``, ``scaler.update``. The scaler is always on.
- ``main_finetune_esc.py`` 356-376 and ``util/lr_decay.py`` 15-76: fine-tuning groups by
  ``param_groups_lrd(model, wd, no_weight_decay_list=model.no_weight_decay(), layer_decay)``:
  no decay for 1-d parameters and the list (``pos_embed``, ``cls_token``, ``dist_token``);
  layer id 0 for ``cls_token``, ``pos_embed``, ``patch_embed.*``, ``i + 1`` for ``blocks.i.*``,
  ``len(blocks) + 1`` for the rest; ``lr_scale = layer_decay ** (num_layers - layer_id)``;
  ``AdamW(groups, lr)`` (betas 0.9/0.999, eps 1e-8); ``clip_grad`` default None.

Where the project deliberately differs, and why the comparison still holds:

- Loss scaling: the project scales only in fp16 (a pass-through in fp32/bf16); the official
  scaler multiplies by 2**16 and divides again, which is exact in binary floating point (the
  restatement below runs an enabled scaler, and the weights still agree).
- AudioMAE++'s loop never zeroes gradients at an epoch start, so with accumulation and an
  epoch length not divisible by it, an incomplete window's gradients leak into the next
  epoch's first step; the project follows AudioMAE and drops them (the shipped AudioMAE++
  configs do not accumulate, so there the two loops agree).
- The project never loads the micro-batches of an incomplete window (AudioMAE loads, computes
  and discards them), so they cost nothing; the restatement feeds it throw-away batches there.
- Fine-tuning's groups come in sorted (layer, decay) order rather than first-appearance order:
  the same groups, listed differently (the optimizer treats every group alike).

Each test runs the project's real recipe (``mae_pretrain``, ``finetune``) and records what
its training loop fed the objective (features, labels, masks) and the lr of every group at
every optimizer step; the restated official step then runs from the same initial weights on
the same micro-batches and masks, and both must agree: groups, lr per step, final weights.
"""

from __future__ import annotations

import copy
import importlib
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch
from torch import nn

from components.loop_support import LoopPlan, LoopSettings
from components.recipes.engine import WarmupCosineSchedule
from test_runtime_helpers import make_stage

# The package re-exports the recipe functions under the modules' names: fetch the modules.
pretrain_module = importlib.import_module("components.recipes.pretrain")
finetune_module = importlib.import_module("components.recipes.finetune")


# ----------------------------------------------------------------------------- the restatement
def official_lr(epoch: float, *, lr: float, min_lr: float, warmup_epochs: float, epochs: float) -> float:
    """``util/lr_sched.adjust_learning_rate``'s value at fractional epoch ``epoch``."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


def official_peak_lr(blr: float, batch_size: int, accum_iter: int, world_size: int = 1) -> float:
    """AudioMAE's ``args.lr = args.blr * eff_batch_size / 256``."""
    return blr * (batch_size * accum_iter * world_size) / 256


def official_pp_peak_lr(learning_rate: float, batch_size: int, accum_iter: int, world_size: int = 1) -> float:
    """AudioMAE++'s ``accum_iter * learning_rate * batch_size * world_size / 256.``."""
    return accum_iter * learning_rate * batch_size * world_size / 256.0


def official_pretrain_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """timm's ``param_groups_weight_decay(model, wd)`` with its empty skip list: [no decay, decay]."""
    no_decay, decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(name)
    return [{"names": no_decay, "weight_decay": 0.0}, {"names": decay, "weight_decay": weight_decay}]


def official_layer_id(name: str, num_layers: int) -> int:
    """``lr_decay.get_layer_id_for_vit`` (names as the official ViT has them, at the top level)."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers


def official_lrd_groups(
    classifier: nn.Module, weight_decay: float, layer_decay: float, no_weight_decay_list: set[str]
) -> list[dict[str, Any]]:
    """``lr_decay.param_groups_lrd`` over the classifier, with its encoder's names unprefixed.

    The project's classifier holds the official ViT's encoder parameters under ``encoder.``;
    the head, ``fc_norm`` and everything else sit at the top level in both.
    """
    num_layers = len(classifier.encoder.blocks) + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups: dict[str, dict[str, Any]] = {}
    for name, p in classifier.named_parameters():
        if not p.requires_grad:
            continue
        official = name.removeprefix("encoder.")
        no_decay = p.ndim == 1 or official in no_weight_decay_list
        layer = official_layer_id(official, num_layers)
        key = f"layer_{layer}_{'no_decay' if no_decay else 'decay'}"
        group = groups.setdefault(
            key, {"names": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scales[layer]}
        )
        group["names"].append(name)
    return list(groups.values())


def official_training(
    objective: nn.Module,
    groups: list[dict[str, Any]],
    epochs: list[list[tuple[torch.Tensor, torch.Tensor, Any]]],
    *,
    betas: tuple[float, float],
    accum_iter: int,
    lr_rule: Callable[[float], float],
    clip_grad: float | None,
    set_mask: Callable[[Any], None],
) -> list[list[float]]:
    """``train_one_epoch`` of ``engine_pretrain.py`` / ``engine_finetune.py`` with the native scaler.

    ``epochs[e]`` holds every micro-batch the epoch's loader yields (``(features, labels,
    mask)``); ``set_mask`` makes the next forward pass use ``mask``. Returns each optimizer
    step's group learning rates.
    """
    params = dict(objective.named_parameters())
    prefix = next(n for n in ("model.", "classifier.") if any(k.startswith(n) for k in params))
    optimizer = torch.optim.AdamW(
        [
            {"params": [params[prefix + n] for n in g["names"]], **{k: v for k, v in g.items() if k != "names"}}
            for g in groups
        ],
        lr=lr_rule(0.0),
        betas=betas,
    )
    scaler = torch.amp.GradScaler("cpu")  # NativeScalerWithGradNormCount: always enabled
    lrs: list[list[float]] = []
    objective.train()
    for epoch, batches in enumerate(epochs):
        optimizer.zero_grad()
        for data_iter_step, (features, labels, mask) in enumerate(batches):
            if data_iter_step % accum_iter == 0:
                lr = lr_rule(data_iter_step / len(batches) + epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
            set_mask(mask)
            loss, _ = objective(features, labels)
            loss = loss / accum_iter
            scaler.scale(loss).backward()
            if (data_iter_step + 1) % accum_iter == 0:
                scaler.unscale_(optimizer)
                if clip_grad is not None:
                    nn.utils.clip_grad_norm_(objective.parameters(), clip_grad)
                lrs.append([g["lr"] for g in optimizer.param_groups])
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
    return lrs


# ----------------------------------------------------------------------------- recording the project
class Recorder:
    """What the project's training loop did: initial objective, micro-batches, masks, lr per step."""

    def __init__(self) -> None:
        self.initial: nn.Module | None = None
        self.loop: SimpleNamespace | None = None  # the plan, optimizer and model the loop was given
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.masks: list[Any] = []
        self.lrs: list[list[float]] = []
        self.names: dict[int, str] = {}

    def wrap(self, loop: Callable[..., Any], masked_model: Callable[[nn.Module], nn.Module | None]) -> Callable[..., Any]:
        """``loop`` (a recipe's own training loop), recording what it is given and what it feeds the objective."""
        recorder = self

        def recording_loop(stage: Any, /, **kwargs: Any) -> Any:
            objective, optimizer = kwargs["objective"], kwargs["optimizer"]
            recorder.initial = copy.deepcopy(objective)  # before any step
            recorder.names = {id(p): n for n, p in objective.named_parameters()}
            recorder.loop = SimpleNamespace(plan=kwargs["plan"], optimizer=optimizer, model=kwargs["model"])

            def record_batch(module: nn.Module, args: tuple[Any, ...]) -> None:
                if module.training:
                    recorder.batches.append((args[0].detach().clone(), args[1].detach().clone()))

            objective.register_forward_pre_hook(record_batch)
            optimizer.register_step_pre_hook(lambda opt, *_: recorder.lrs.append([g["lr"] for g in opt.param_groups]))
            model = masked_model(objective)
            if model is not None:
                draw = model.sample_mask

                def recorded_mask(*args: Any, **kw: Any) -> Any:
                    mask = draw(*args, **kw)
                    if model.training:
                        recorder.masks.append(tuple(t.clone() for t in mask))
                    return mask

                model.sample_mask = recorded_mask
            return loop(stage, **kwargs)

        return recording_loop

    def groups(self) -> list[dict[str, Any]]:
        """The project optimizer's groups by parameter name (``lr`` and ``params`` left out)."""
        assert self.loop is not None
        return [
            {
                "names": [self.names[id(p)].split(".", 1)[1] for p in g["params"]],
                **{k: v for k, v in g.items() if k in ("weight_decay", "lr_scale")},
            }
            for g in self.loop.optimizer.param_groups
        ]


def epochs_with_leftovers(
    recorder: Recorder, micro_per_epoch: int, used_per_epoch: int, dummy: Callable[[int], tuple[Any, Any, Any]]
) -> list[list[tuple[Any, Any, Any]]]:
    """The recorded micro-batches cut into epochs, each padded to the loader's length with throw-away batches."""
    masks = recorder.masks or [None] * len(recorder.batches)
    assert len(masks) == len(recorder.batches) and len(recorder.batches) % used_per_epoch == 0
    items = [(x, y, m) for (x, y), m in zip(recorder.batches, masks)]
    epochs = []
    for start in range(0, len(items), used_per_epoch):
        epochs.append(items[start : start + used_per_epoch] + [dummy(i) for i in range(micro_per_epoch - used_per_epoch)])
    return epochs


def assert_same_weights(project: nn.Module, official: nn.Module, initial: nn.Module) -> None:
    """Equal to the last bit, which the same float operations in the same order give.

    No looser: AdamW is all but blind to a constant factor on the gradients (only ``eps`` sees
    one; clipping to a norm removes it), so a loss not divided by ``accum_steps`` moves the
    weights by about one float32 ulp after a few steps.
    """
    moved = 0.0
    for (name, p), q, p0 in zip(project.state_dict().items(), official.state_dict().values(), initial.state_dict().values()):
        if p.is_floating_point():
            moved = max(moved, float((p - p0).abs().max()))
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")
    assert moved > 1e-4  # the steps really trained


# ----------------------------------------------------------------------------- the tests
PRETRAIN = dict(base_lr=0.2, min_lr=1e-4, warmup_epochs=1.0, weight_decay=0.5, num_workers=0, checkpoint_every=100,
                log_every=100, keep_last=1, mask_ratio=0.5)


@pytest.mark.parametrize(
    "epochs, batch_size, accum_steps, clip_grad",
    [
        (2, 8, 1, None),  # 4 micro-batches an epoch, 8 steps
        (3, 8, 2, 0.05),  # 4 micro-batches, 2 steps an epoch, clipped
        (3, 4, 3, None),  # 8 micro-batches, 2 steps an epoch: two left over, lr placed by micro-batch
    ],
)
def test_pretraining_step_matches_the_official_recipe(
    epochs: int, batch_size: int, accum_steps: int, clip_grad: float | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    stage = make_stage(tmp_path, ["--steps", "1000"])
    recorder = Recorder()
    monkeypatch.setattr(pretrain_module, "pretrain_loop", recorder.wrap(pretrain_module.pretrain_loop, lambda objective: objective.model))
    summary = pretrain_module.mae_pretrain(
        stage, epochs=epochs, batch_size=batch_size, accum_steps=accum_steps, clip_grad=clip_grad, **PRETRAIN
    ).summary
    num_items = len(stage.components.dataset())  # 32 clips, all used (no train_folds)
    loader_len = num_items // batch_size  # drop_last=True
    steps_per_epoch = loader_len // accum_steps
    plan = recorder.loop.plan
    assert (plan.micro_batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (
        loader_len, steps_per_epoch, steps_per_epoch * epochs
    )
    assert summary["steps"] == plan.total_steps >= 5

    # lr by batch: AudioMAE's rule exactly; AudioMAE++'s writes the product in another order
    peak = official_peak_lr(PRETRAIN["base_lr"], batch_size, accum_steps)
    assert summary["peak_lr"] == recorder.loop.optimizer.defaults["lr"] == peak
    assert summary["peak_lr"] == pytest.approx(official_pp_peak_lr(PRETRAIN["base_lr"], batch_size, accum_steps), rel=1e-15)

    # parameter groups: same members, same decay; cls_token and mask_token are decayed
    initial = recorder.initial
    official = copy.deepcopy(initial)
    groups = official_pretrain_groups(official.model, PRETRAIN["weight_decay"])
    assert recorder.groups() == groups
    assert {"cls_token", "mask_token"} <= set(groups[1]["names"])
    defaults = recorder.loop.optimizer.defaults
    assert (defaults["betas"], defaults["eps"], defaults["amsgrad"]) == ((0.9, 0.95), 1e-8, False)

    # the official loop, on the same micro-batches and masks
    model = official.model
    draw = model.sample_mask
    pending: list[Any] = [None]
    model.sample_mask = lambda *a, **k: pending[0] if pending[0] is not None else draw(*a, **k)
    shape = recorder.batches[0][0].shape

    def leftover(i: int) -> tuple[Any, Any, Any]:  # computed and discarded by the official loop
        return torch.randn(shape), torch.zeros(shape[0], dtype=torch.long), None

    rule = lambda e: official_lr(e, lr=peak, min_lr=PRETRAIN["min_lr"], warmup_epochs=PRETRAIN["warmup_epochs"], epochs=epochs)  # noqa: E731
    lrs = official_training(
        official,
        groups,
        epochs_with_leftovers(recorder, loader_len, steps_per_epoch * accum_steps, leftover),
        betas=(0.9, 0.95),
        accum_iter=accum_steps,
        lr_rule=rule,
        clip_grad=clip_grad,
        set_mask=lambda mask: pending.__setitem__(0, mask),
    )
    assert lrs[0] == [0.0, 0.0]  # warm-up starts from 0
    assert recorder.lrs == lrs  # identical, step by step
    assert_same_weights(recorder.loop.model, official.model, initial.model)


def test_finetuning_step_matches_the_official_recipe_with_layer_decay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    stage = make_stage(tmp_path, ["--steps", "1000"])
    recorder = Recorder()
    monkeypatch.setattr(finetune_module, "classifier_loop", recorder.wrap(finetune_module.classifier_loop, lambda objective: None))
    epochs, batch_size, layer_decay, weight_decay = 2, 6, 0.5, 0.3
    summary = finetune_module.finetune(
        stage, epochs=epochs, batch_size=batch_size, base_lr=0.5, min_lr=1e-4, warmup_epochs=1.0,
        weight_decay=weight_decay, layer_decay=layer_decay, drop_path=0.0, clip_grad=0.5, pretrained=False,
        num_workers=0, checkpoint_every=100, log_every=100, keep_last=1,
    ).summary  # fmt: skip
    plan = recorder.loop.plan
    loader_len = plan.micro_batches_per_epoch
    assert plan.steps_per_epoch == loader_len and summary["steps"] == loader_len * epochs >= 5
    peak = official_peak_lr(0.5, batch_size, 1)
    assert recorder.loop.optimizer.defaults["lr"] == peak  # AdamW is built with the peak lr

    initial = recorder.initial
    official = copy.deepcopy(initial)
    classifier = official.classifier
    # models_vit.VisionTransformer.no_weight_decay(): its fixed sin-cos pos_embed is no parameter here
    groups = official_lrd_groups(classifier, weight_decay, layer_decay, {"pos_embed", "cls_token", "dist_token"})
    key = lambda g: (g["lr_scale"], g["weight_decay"], tuple(g["names"]))  # noqa: E731
    assert sorted(map(key, recorder.groups())) == sorted(map(key, groups))
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    depth = len(classifier.encoder.blocks)
    assert scale["encoder.cls_token"] == layer_decay ** (depth + 1) and scale["head.weight"] == 1.0
    defaults = recorder.loop.optimizer.defaults
    assert (defaults["betas"], defaults["eps"], defaults["amsgrad"]) == ((0.9, 0.999), 1e-8, False)

    shape = recorder.batches[0][0].shape
    rule = lambda e: official_lr(e, lr=peak, min_lr=1e-4, warmup_epochs=1.0, epochs=epochs)  # noqa: E731
    lrs = official_training(
        official,
        groups,
        epochs_with_leftovers(recorder, loader_len, loader_len, lambda i: (torch.randn(shape), torch.zeros(shape[0], dtype=torch.long), None)),
        betas=(0.9, 0.999),
        accum_iter=1,
        lr_rule=rule,
        clip_grad=0.5,
        set_mask=lambda mask: None,
    )
    # the project lists the same groups in another order: compare each group's lr by its members
    by_names = lambda rates, gs: sorted(zip(map(key, gs), rates))  # noqa: E731
    assert [by_names(r, recorder.groups()) for r in recorder.lrs] == [by_names(r, groups) for r in lrs]
    assert max(lrs[0]) == 0.0 and max(lrs[1]) > 0.0
    assert_same_weights(recorder.loop.model, classifier, initial.classifier)


def test_warmup_is_placed_by_micro_batch_when_accumulation_does_not_divide_the_epoch() -> None:
    plan = LoopPlan.make(28, LoopSettings(epochs=2, batch_size=4, accum_steps=2), world_size=1, max_steps=None)
    assert (plan.micro_batches_per_epoch, plan.steps_per_epoch) == (7, 3)
    schedule = WarmupCosineSchedule(1.0, min_lr=0.0, warmup_epochs=1.0)
    rule = lambda e: official_lr(e, lr=1.0, min_lr=0.0, warmup_epochs=1.0, epochs=2)  # noqa: E731
    expected = [rule(k * 2 / 7 + epoch) for epoch in range(2) for k in range(3)]
    assert [schedule(step, plan) for step in range(plan.total_steps)] == expected
    assert expected[:3] == [0.0, 2 / 7, 4 / 7]
