"""Plots and TensorBoard with the real packages (matplotlib and tensorboard are in the dev
extra), and the one path each where the package is missing.

One smoke run of every recipe (module-scoped, ~5 s) is drawn and logged for real: every PNG
is decoded and checked for its size and for holding a picture, and the event files are read
back with TensorBoard's own reader and compared with ``metrics.jsonl``.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from components.metrics import read_metrics
from test_runtime_helpers import ALL_STEPS, SMOKE, run_main

matplotlib_image = pytest.importorskip("matplotlib.image")  # make venv installs both
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

DPI = 110  # Plotter._save
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smoke-run")
    assert run_main(["--smoke", "--out-dir", str(out), "--pretrain.plot_every", "1"]) == 0
    return out


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which a PNG must start with."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_every_plot_is_a_real_png_of_its_figure_size(smoke_run: Path) -> None:
    classes = SMOKE["data"]["num_classes"]
    confusion = int(max(4.0, 0.25 * classes) * DPI)
    expected = {  # name: (width, height) in pixels = figsize x dpi
        "pretrain_loss.png": (6 * DPI, 4 * DPI),
        "pretrain_reconstruction.png": (12 * DPI, 4 * DPI),
        "pretrain_reconstruction_0000001.png": (12 * DPI, 4 * DPI),
        "finetune_loss.png": (6 * DPI, 4 * DPI),
        "kfold_fold_1_loss.png": (6 * DPI, 4 * DPI),
        "kfold_fold_2_loss.png": (6 * DPI, 4 * DPI),
        "embed_pca.png": (6 * DPI, 6 * DPI),
        "finetune_confusion.png": (confusion, confusion),
        "knn_confusion.png": (confusion, confusion),
        "probe_confusion.png": (confusion, confusion),
        "kfold_fold_1_confusion.png": (confusion, confusion),
    }
    plots = {path.name: path for path in (smoke_run / "plots").glob("*.png")}
    assert set(expected) <= set(plots), sorted(set(expected) - set(plots))
    for name, path in sorted(plots.items()):
        size = png_size(path)
        if name in expected:
            assert size == expected[name], (name, size)
        pixels = matplotlib_image.imread(path)  # decodes the whole file: a cut-off PNG fails
        assert pixels.shape[:2] == (size[1], size[0]) and pixels.shape[2] in (3, 4), name
        rgb = pixels[..., :3].reshape(-1, 3)
        # a drawn figure, not a blank canvas: white background plus many other colours
        assert (rgb == 1.0).all(axis=1).mean() > 0.2, name
        assert len({tuple(row) for row in rgb[:: max(1, len(rgb) // 20000)].tolist()}) > 20, name


def test_tensorboard_events_hold_the_logged_scalars(smoke_run: Path) -> None:
    events = list((smoke_run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    accumulator = event_accumulator.EventAccumulator(str(smoke_run / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"pretrain/train/loss", "pretrain/train/lr", "finetune/eval/accuracy", "kfold/fold_1/train/loss"} <= tags
    for section, kind, key in (("pretrain", "train", "loss"), ("pretrain", "train", "lr"), ("finetune", "eval", "accuracy")):
        logged = [(r["step"], r[key]) for r in read_metrics(smoke_run / "metrics.jsonl", section) if r["kind"] == kind and key in r]
        read_back = [(e.step, e.value) for e in accumulator.Scalars(f"{section}/{kind}/{key}")]
        assert logged and [s for s, _ in read_back] == [s for s, _ in logged], (section, key)
        assert [v for _, v in read_back] == pytest.approx([v for _, v in logged], rel=1e-6), (section, key)


def test_without_matplotlib_one_notice_and_no_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert run_main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("matplotlib is not installed") == 1
    assert not (tmp_path / "plots").exists()


def test_without_tensorboard_the_run_logs_to_jsonl_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # (no plots: faster)
    assert run_main(["--smoke", "--out-dir", str(tmp_path), "--steps", "1"], ALL_STEPS[:1]) == 0
    assert not (tmp_path / "tensorboard").exists()
    assert read_metrics(tmp_path / "metrics.jsonl", "pretrain")
