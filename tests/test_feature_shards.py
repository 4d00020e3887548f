"""Precomputed features: the ``features`` step, ``feature_shards`` and the runtime's check.

The Kaldi fbanks of real spoken words are written once; training on them gives the model
the inputs the transform computes from the audio (exactly, in eval mode) and the same
losses on a fixed seed; features of other transform settings are a clear exit-2 error.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import field, make_dataclass
from pathlib import Path

import pytest
import torch

from components.data.feature_shards import FeatureShards, check_feature_transform
from components.data.shards import AudioShards
from components.errors import UsageError
from components.metrics import read_metrics
from components.registry import load_catalog, transform_registry
from components.runtime import collate_signals
from components.transforms.kaldi import KaldiFbank
from components.transforms.spectral import IQPatches, LogMel
from test_shard_writer import Config, FbankConfig, run_steps, sharded, source_view, word_folder  # noqa: F401 (fixtures)

SETTINGS = {"sample_rate": 16000, "num_mel_bins": 32, "target_frames": 24, "mean": -6.6268077, "std": 5.358466}


@pytest.fixture(scope="module")
def featured(sharded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The words' Kaldi fbanks, written by a features step reading their audio shards."""
    out = tmp_path_factory.mktemp("features")
    args = ["--out-dir", str(out / "run"), "--features.output", str(out / "features")]
    config = config_for("audio_shards", str(sharded / "*.tar"))
    assert run_steps("features", args, data=data_class("audio_shards"), config=config) == 0
    return out / "features"


def test_the_manifest_records_the_transform_and_the_feature_shape(word_folder: Path, featured: Path) -> None:
    manifest = json.loads((featured / "manifest.json").read_text())
    source = source_view(word_folder)  # the shards' clips have the folder's lengths
    lengths = torch.tensor([source.load(i).shape[-1] for i in range(len(source))])
    assert manifest["transform"]["name"] == "kaldi_fbank" and manifest["transform"]["class"] == "KaldiFbank"
    assert manifest["transform"]["settings"] == SETTINGS == FbankConfig().__dict__
    assert manifest["feature_shape"] == [1, None, 32] and manifest["feature_dtype"] == "float32"
    assert manifest["num_items"] == 12
    assert manifest["total_frames"] == int(KaldiFbank(**SETTINGS).valid_frames(lengths).sum())


def test_precomputed_then_windowed_equals_the_transform_on_the_audio_in_eval_mode(sharded: Path, featured: Path) -> None:
    audio = AudioShards(shards=str(sharded / "*.tar"), sample_rate=16000, clip_seconds=None, cache=False)
    features = FeatureShards(shards=str(featured / "*.tar"), cache=False)
    assert [r.label for r in features.records] == [r.label for r in audio.records]
    assert [r.fold for r in features.records] == [r.fold for r in audio.records]
    assert features.class_names == audio.class_names and features.sample_rate == 16000
    transform = KaldiFbank(**SETTINGS).eval()
    precomputed = features.adapt_transform(KaldiFbank(**SETTINGS), SETTINGS).eval()
    for batch in ([0, 1, 2, 3], [4, 7, 11], [5]):  # unequal lengths: padded waveforms, padded frames
        signals, labels, lengths = collate_signals([audio[i] for i in batch])
        stored, stored_labels, frames = collate_signals([features[i] for i in batch])
        assert torch.equal(labels, stored_labels)
        assert torch.equal(frames, transform.valid_frames(lengths))
        assert torch.equal(precomputed(stored, frames), transform(signals, lengths))
        ours, owner = precomputed.windows(stored, frames)
        theirs, their_owner = transform.windows(signals, lengths)
        assert torch.equal(ours, theirs) and torch.equal(owner, their_owner)
        assert precomputed.padded_share(frames) == transform.padded_share(lengths)
    assert precomputed.output_shape(int(features[0][0].shape[-1])) == (1, 24, 32)


def test_training_on_features_gives_the_losses_of_training_on_the_audio(
    word_folder: Path, sharded: Path, featured: Path, tmp_path: Path
) -> None:
    def losses(data: str, shards: str) -> list[float]:
        out = tmp_path / data
        args = ["--out-dir", str(out), "--seed", "3", "--pretrain.epochs", "2", "--dtype", "fp32"]
        assert run_steps("pretrain", args, data=data_class(data), config=config_for(data, shards)) == 0
        return [r["loss"] for r in read_metrics(out / "metrics.jsonl", "pretrain") if r["kind"] == "train"]

    from_audio = losses("audio_shards", str(sharded / "*.tar"))
    from_features = losses("feature_shards", str(featured / "*.tar"))
    assert len(from_audio) == 6
    assert from_features == from_audio  # the same floats: the same model inputs, the same draws


def data_class(name: str) -> type:
    load_catalog()
    from components.registry import data_registry

    return data_registry.get(name)


def config_for(data: str, shards: str) -> type:
    """The test Config with a data section for ``data`` reading ``shards``."""
    fields = [("shards", str, shards), ("cache", bool, False)]
    if data == "audio_shards":
        fields += [("sample_rate", int, 16000), ("clip_seconds", "float | None", None)]
    section = make_dataclass("Data", fields)
    return make_dataclass("ShardsConfig", [("data", section, field(default_factory=section))], bases=(Config,))


def test_features_of_other_transform_settings_are_a_clear_exit_2_error(
    featured: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--out-dir", str(tmp_path / "run"), "--transform.num_mel_bins", "64", "--model.img_size", "24", "64"]
    config = config_for("feature_shards", str(featured / "*.tar"))
    assert run_steps("pretrain", args, data=data_class("feature_shards"), config=config) == 2
    error = capsys.readouterr().err
    assert "num_mel_bins: 32 (features) vs 64 (spec)" in error
    assert "Rewrite the features with this transform" in error and "set the transform to match" in error
    assert "Traceback" not in error


def test_window_and_normalisation_settings_may_change_but_the_front_end_may_not() -> None:
    made_by = {"name": "kaldi_fbank", "settings": dict(SETTINGS)}
    changed = {**SETTINGS, "target_frames": 96, "mean": 0.0, "std": 1.0}
    check_feature_transform(made_by, KaldiFbank(**changed), changed, "m.json")  # no error
    with pytest.raises(UsageError, match=r"sample_rate: 16000 \(features\) vs 8000 \(spec\)"):
        check_feature_transform(made_by, KaldiFbank(**{**SETTINGS, "sample_rate": 8000}), {**SETTINGS, "sample_rate": 8000}, "m.json")
    log_mel = {"sample_rate": 16000}
    with pytest.raises(UsageError, match=r"transform: 'kaldi_fbank' \(features\) vs 'log_mel' \(spec\)"):
        check_feature_transform(made_by, LogMel(**log_mel), log_mel, "m.json")
    with pytest.raises(UsageError, match="cannot run on precomputed features"):
        check_feature_transform(made_by, IQPatches(), {}, "m.json")


def test_every_transform_with_a_features_split_names_itself_as_registered() -> None:
    load_catalog()
    split = []
    for name in transform_registry.list():
        cls = transform_registry.get(name)
        if "features" in vars(cls):
            assert cls.registered_name == name
            assert set(cls.post_feature_settings) <= set(inspect.signature(cls).parameters)
            split.append(name)
    assert {"kaldi_fbank", "log_mel", "iq_spectrogram"} <= set(split)


def test_float16_features_are_stored_as_float16_and_close(sharded: Path, featured: Path, tmp_path: Path) -> None:
    args = ["--out-dir", str(tmp_path / "run"), "--features.output", str(tmp_path / "half"),
            "--features.dtype", "float16", "--features.max_items", "100"]
    config = config_for("audio_shards", str(sharded / "*.tar"))
    assert run_steps("features", args, data=data_class("audio_shards"), config=config) == 0
    half = FeatureShards(shards=str(tmp_path / "half" / "*.tar"), cache=False)
    full = FeatureShards(shards=str(featured / "*.tar"), cache=False)
    assert json.loads((tmp_path / "half" / "manifest.json").read_text())["feature_dtype"] == "float16"
    for i in range(len(full)):
        assert half.read_tensor(i).dtype == torch.float16 and half[i][0].dtype == torch.float32
        torch.testing.assert_close(half[i][0], full[i][0], rtol=1e-3, atol=1e-2)
