"""torchrun / DDP on CPU (gloo, two processes): the same gradients as one process on the same
global batch, and every recipe runs with rank-0-only writing and collective evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from components.distributed import DistInfo, dist_info_from_env, init_distributed, shutdown_distributed
from components.metrics import read_metrics
from components.loop_support import LoopSettings
from components.recipes.engine import WarmupCosineSchedule
from test_runtime_helpers import (
    ALL_STEPS, LinearRegressor, LoopRun, RegressionObjective, ToneDataset, free_port, make_stage, run_main, spawn_and_join,
)


def _train_regressor(out_dir: Path, dist_info: DistInfo, batch_size: int) -> torch.nn.Module:
    """Two optimizer steps of SGD, accumulating two micro-batches each, through the real pre-training loop."""
    stage = make_stage(out_dir, dist_info=dist_info)
    torch.manual_seed(0)
    model = LinearRegressor()
    loop = LoopRun(
        stage, model=model, objective=RegressionObjective(model),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05), dataset=ToneDataset(num_items=16),
        settings=LoopSettings(epochs=1, batch_size=batch_size, accum_steps=2, checkpoint_every=1),
        lr_at=WarmupCosineSchedule(0.05, min_lr=0.05),
    )
    result = loop.run()
    assert result.step == 2
    return model


def _worker(rank: int, world_size: int, ports: tuple[int, int], out_dir: str) -> None:
    port, pipeline_port = ports
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = dist_info_from_env()
    init_distributed(info, torch.device("cpu"))
    try:
        model = _train_regressor(Path(out_dir) / "regression", info, batch_size=2)
        torch.save(model.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()
    # The whole pipeline under torchrun's variables: run_pipeline joins the group itself
    # (on a fresh port: the first group's store may still hold the old one).
    os.environ["MASTER_PORT"] = str(pipeline_port)
    # InfoNCE and uniformity on: their all-gathers run inside DDP's forward and backward
    args = ["--smoke", "--out-dir", str(Path(out_dir) / "pipeline"), "--pretrain.infonce_weight", "0.1", "--pretrain.uniformity_weight", "0.1"]
    code = run_main(args, ALL_STEPS[:5])
    if code != 0:
        raise SystemExit(f"rank {rank}: run_pipeline exited {code}")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    spawn_and_join(_worker, (2, (free_port(), free_port()), str(tmp_path)), nprocs=2, timeout=240)
    torch.set_num_threads(1)
    single = _train_regressor(tmp_path / "single", DistInfo(), batch_size=4)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in single.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"ranks disagree on {name}"
        assert torch.allclose(ranks[0][name], value, atol=1e-6, rtol=1e-5), f"DDP differs from one process on {name}"
    assert not torch.allclose(ranks[0]["linear.weight"], LinearRegressor().state_dict()["linear.weight"])

    summary = json.loads((tmp_path / "pipeline" / "summary.json").read_text())
    pretrain_logs = [r for r in read_metrics(tmp_path / "pipeline" / "metrics.jsonl") if r["kind"] == "train" and "infonce" in r]
    assert pretrain_logs and all(r["infonce"] == r["infonce"] and r["uniformity"] <= 0 for r in pretrain_logs)
    assert summary["world_size"] == 2
    assert summary["steps"]["pretrain"]["effective_batch"] == 2 * 4
    assert summary["steps"]["embed"]["num_items"] == 32
    assert 0.0 <= summary["steps"]["finetune"]["accuracy"] <= 1.0
    lines = (tmp_path / "pipeline" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines))  # one writer: rank 0
