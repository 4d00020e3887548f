"""Plots: silent without matplotlib (one notice), and every plot call site runs when it is present.

matplotlib is not a dependency (and not installed here), so a stand-in ``matplotlib.pyplot``
records the calls and writes placeholder files: it checks that the recipes hand the plot
functions data they can draw (shapes, numpy conversion, names), not how the PNGs look.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from unittest.mock import MagicMock

import pytest

from test_runtime_helpers import run_main


class _Figure:
    def tight_layout(self) -> None:
        pass

    def savefig(self, path: Path, dpi: int | None = None) -> None:
        Path(path).write_bytes(b"\x89PNG placeholder")


def _fake_matplotlib() -> tuple[types.ModuleType, types.ModuleType]:
    pyplot = types.ModuleType("matplotlib.pyplot")

    def subplots(nrows: int = 1, ncols: int = 1, **_: object) -> tuple[_Figure, object]:
        axes = [MagicMock() for _ in range(nrows * ncols)]
        return _Figure(), axes[0] if len(axes) == 1 else axes

    pyplot.subplots = subplots
    pyplot.close = lambda figure: None
    pyplot.get_cmap = lambda name: (lambda index: (0.0, 0.0, 0.0, 1.0))
    matplotlib = types.ModuleType("matplotlib")
    matplotlib.use = lambda backend: None
    matplotlib.pyplot = pyplot
    return matplotlib, pyplot


def test_every_plot_is_drawn_when_matplotlib_is_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matplotlib, pyplot = _fake_matplotlib()
    monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--pretrain.plot_every", "1"]) == 0
    plots = {path.name for path in (tmp_path / "plots").glob("*.png")}
    expected = {
        "pretrain_loss.png", "pretrain_reconstruction.png", "pretrain_reconstruction_0000001.png",
        "finetune_confusion.png", "finetune_loss.png", "embed_pca.png", "knn_confusion.png", "probe_confusion.png",
        "kfold_fold_1_confusion.png", "kfold_fold_1_loss.png", "kfold_fold_2_loss.png",
    }
    assert expected <= plots, sorted(expected - plots)


def test_without_matplotlib_one_notice_and_no_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    assert run_main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("matplotlib is not installed") == 1
    assert not (tmp_path / "plots").exists()


def test_scalars_go_to_tensorboard_when_it_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[tuple[str, float, int]] = []

    class SummaryWriter:
        def __init__(self, log_dir: str) -> None:
            assert log_dir == str(tmp_path / "tensorboard")

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((tag, value, step))

        def close(self) -> None:
            written.append(("closed", 0.0, 0))

    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    assert run_main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    tags = {tag for tag, _, _ in written}
    assert {"pretrain/train/loss", "pretrain/train/lr", "finetune/eval/accuracy", "closed"} <= tags
