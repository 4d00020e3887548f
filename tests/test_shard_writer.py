"""The ``shard`` step: a data set written once into WebDataset tar shards reads back the same.

Real spoken words (espeak-ng + sox) in a class-per-folder tree are sharded by the step as an
emitted script runs it (``run_pipeline``); ``audio_shards`` and the real ``webdataset``
package read the shards; the manifest's counts and sha256 hold; a rerun gives the same bytes;
an existing folder is refused, or moved aside with ``overwrite``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import torch

from components.data.audio_folder import AudioFolder
from components.data.feature_shards import IQShards
from components.data.shards import AudioShards
from components.data.synthetic import SyntheticIQ
from components.models.audiomae_pp import AudioMAEPlusPlus
from components.recipes.pretrain import mae_pretrain
from components.recipes.shard import shard_key, write_features, write_shards
from components.runtime import Pipeline, RunOptions, Step, run_pipeline
from components.transforms.kaldi import KaldiFbank
from speech import require_speech_tools, say


@dataclass
class FolderData:
    root: str = "data/audio"
    sample_rate: int = 16000
    folds: list[int] | None = None
    num_folds: int = 3
    clip_seconds: float | None = None
    skip_bad_files: bool = False
    cache: bool = False


@dataclass
class FbankConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 32
    target_frames: int | None = 24
    mean: float | None = -6.6268077
    std: float | None = 5.358466


@dataclass
class TinyModel:
    preset: Literal["tiny", "base", "large"] = "tiny"
    img_size: tuple[int, int] = (24, 32)
    patch_size: tuple[int, int] = (8, 8)
    embed_dim: int | None = 32
    depth: int | None = 1
    num_heads: int | None = 2
    decoder_embed_dim: int | None = 32
    decoder_depth: int | None = 1
    decoder_num_heads: int | None = 2
    mask_ratio: float = 0.5


@dataclass
class ShardConfig:
    output: str | None = None
    prefix: str = "shard"
    max_items: int | None = 5
    max_megabytes: float | None = 1024.0
    overwrite: bool = False
    num_workers: int = 0


@dataclass
class FeaturesConfig:
    output: str | None = None
    prefix: str = "features"
    max_items: int | None = 5
    max_megabytes: float | None = 1024.0
    overwrite: bool = False
    dtype: Literal["float32", "float16"] = "float32"
    num_workers: int = 0


@dataclass
class PretrainConfig:
    epochs: int = 1
    batch_size: int = 4
    lr: float | None = 1e-3
    warmup_epochs: float = 0.0
    num_workers: int = 0
    log_every: int = 1
    plot_every: int = 0


@dataclass
class Config:
    run: RunOptions = field(default_factory=RunOptions)
    data: FolderData = field(default_factory=FolderData)
    transform: FbankConfig = field(default_factory=FbankConfig)
    model: TinyModel = field(default_factory=TinyModel)
    shard: ShardConfig = field(default_factory=ShardConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


STEPS = {
    "shard": Step("shard", write_shards),
    "features": Step("features", write_features),
    "pretrain": Step("pretrain", mae_pretrain),
}


def run_steps(names: str, argv: list[str], data: type = AudioFolder, config: type = Config) -> int:
    torch.set_num_threads(1)
    pipeline = Pipeline(
        name="shards", spec_hash="0" * 64, data=data, transform=KaldiFbank, model=AudioMAEPlusPlus,
        steps=tuple(STEPS[name] for name in names.split(",")),
    )
    return run_pipeline(pipeline, config, argv)


WORDS = ("yes", "no", "up")
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3")


@pytest.fixture(scope="module")
def word_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 spoken words of unequal length, 3 classes; one recorded at 22.05 kHz (resampled once)."""
    require_speech_tools()
    root = tmp_path_factory.mktemp("words")
    for w, word in enumerate(WORDS):
        for v, voice in enumerate(VOICES):
            say(word, voice, 140 + 20 * v, root / word / f"{word}.{v}.wav", rate=22050 if (w, v) == (1, 2) else 16000)
    return root


@pytest.fixture(scope="module")
def sharded(word_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    args = ["--data-dir", str(word_folder), "--out-dir", str(out / "run"), "--shard.output", str(out / "shards")]
    assert run_steps("shard", args) == 0
    return out / "shards"


def source_view(word_folder: Path) -> AudioFolder:
    return AudioFolder(root=str(word_folder), sample_rate=16000, num_folds=3, clip_seconds=None, cache=False)


def test_round_trip_through_audio_shards_gives_the_same_clips_labels_and_folds(word_folder: Path, sharded: Path) -> None:
    source = source_view(word_folder)
    shards = AudioShards(shards=str(sharded / "shard-*.tar"), sample_rate=16000, clip_seconds=None, cache=False)
    assert shards.class_names == source.class_names
    assert len(shards) == len(source) == 12
    for i, (ours, theirs) in enumerate(zip(shards.records, source.records)):
        assert (ours.label, ours.category, ours.fold) == (theirs.label, theirs.category, theirs.fold)
        # the clip as 16-bit PCM: the 16 kHz files exactly, the resampled one to its 16-bit value
        expected = (source.load(i).double() * 32768).round().clamp(-32768, 32767) / 32768
        assert torch.equal(shards.load(i).double(), expected), theirs.key


def test_the_webdataset_package_reads_the_shards(sharded: Path) -> None:
    webdataset = pytest.importorskip("webdataset")
    urls = sorted(str(p) for p in sharded.glob("shard-*.tar"))
    samples = list(webdataset.WebDataset(urls, shardshuffle=False))
    keys = [sample["__key__"] for sample in samples]
    assert keys == sorted(keys) and len(keys) == 12
    assert keys[0] == "00000000_no_0" and all(re.fullmatch(r"\d{8}_[a-z]+_\d", key) for key in keys)
    for sample in samples:
        meta = json.loads(sample["json"])
        assert set(meta) == {"label", "category", "fold", "source"}
        with wave.open(io.BytesIO(sample["wav"])) as clip:
            assert (clip.getframerate(), clip.getsampwidth(), clip.getnchannels()) == (16000, 2, 1)
            assert clip.getnframes() > 1600


def test_manifest_counts_and_checksums_hold(word_folder: Path, sharded: Path) -> None:
    manifest = json.loads((sharded / "manifest.json").read_text())
    source = source_view(word_folder)
    assert manifest["num_items"] == 12 and manifest["sample_rate"] == 16000 and manifest["signal_kind"] == "audio"
    assert manifest["counts_per_class"] == {"no": 4, "up": 4, "yes": 4}
    folds: dict[str, int] = {}
    for record in source.records:
        folds[str(record.fold)] = folds.get(str(record.fold), 0) + 1
    assert manifest["counts_per_fold"] == folds
    seconds = sum(source.load(i).shape[-1] for i in range(len(source))) / 16000
    assert manifest["total_seconds"] == pytest.approx(seconds)
    assert manifest["source"]["data_set"] == "AudioFolder" and manifest["source"]["settings"]["root"] == str(word_folder)
    assert [s["file"] for s in manifest["shards"]] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [s["items"] for s in manifest["shards"]] == [5, 5, 2]
    for entry in manifest["shards"]:
        data = (sharded / entry["file"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        with tarfile.open(sharded / entry["file"]) as tar:
            members = tar.getmembers()
        assert len(members) == 2 * entry["items"]
        assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}
    assert sorted(p.name for p in sharded.parent.iterdir() if "partial" in p.name) == []


def test_a_rerun_writes_byte_identical_shards(word_folder: Path, sharded: Path, tmp_path: Path) -> None:
    args = ["--data-dir", str(word_folder), "--out-dir", str(tmp_path / "run"), "--shard.output", str(tmp_path / "again")]
    assert run_steps("shard", args) == 0
    for path in sorted(sharded.iterdir()):
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name


def test_an_existing_folder_is_refused_unless_overwrite_moves_it_aside(
    word_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "shards"
    target.mkdir()
    (target / "mine.txt").write_text("a user's file")
    args = ["--data-dir", str(word_folder), "--out-dir", str(tmp_path / "run"), "--shard.output", str(target),
            "--shard.max_items", "100"]
    assert run_steps("shard", args) == 2
    error = capsys.readouterr().err
    assert f"--shard.output {target} exists and is not empty" in error and "--shard.overwrite" in error
    assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]
    assert run_steps("shard", [*args, "--shard.overwrite"]) == 0
    assert (tmp_path / "shards.old-1" / "mine.txt").read_text() == "a user's file"
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "shard-000000.tar"]


def test_unreadable_files_follow_the_data_sets_skip_policy(word_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "words"
    (root / "yes").mkdir(parents=True)
    (root / "no").mkdir()
    for name in ("yes/yes.0.wav", "no/no.0.wav", "no/no.1.wav"):
        (root / name).write_bytes((word_folder / name).read_bytes())
    (root / "yes" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    args = ["--data-dir", str(root), "--out-dir", str(tmp_path / "run"), "--shard.output", str(tmp_path / "out")]
    assert run_steps("shard", args) == 2
    assert "broken.wav" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert run_steps("shard", [*args, "--data.skip_bad_files"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_items"] == 3 and manifest["skipped"] == [str(root / "yes" / "broken.wav")]


@dataclass
class IQData:
    num_classes: int = 3
    num_items: int = 12
    num_samples: int = 128
    folds: list[int] | None = None


@dataclass
class IQConfig(Config):
    data: IQData = field(default_factory=IQData)


def test_iq_frames_are_written_as_tensors_and_read_back_exactly(tmp_path: Path) -> None:
    args = ["--out-dir", str(tmp_path / "run"), "--shard.output", str(tmp_path / "iq")]
    assert run_steps("shard", args, data=SyntheticIQ, config=IQConfig) == 0
    source = SyntheticIQ(num_classes=3, num_items=12, num_samples=128)
    shards = IQShards(shards=str(tmp_path / "iq" / "shard-{000000..000002}.tar"), cache=False)
    manifest = json.loads((tmp_path / "iq" / "manifest.json").read_text())
    assert manifest["members"] == {"signal": "pth", "labels": "json"} and manifest["total_seconds"] is None
    assert shards.class_names == source.class_names and len(shards) == 12
    for i in range(12):
        assert torch.equal(shards[i][0], source[i][0]) and shards[i][1] == source[i][1]
        assert shards.records[i].fold == source.records[i].fold


def test_keys_are_webdataset_keys() -> None:
    assert shard_key(3, "/data/dog/bark.take.2.wav") == "00000003_bark_take_2"
    assert shard_key(12, "index:7") == "00000012_index_7"
    assert "." not in shard_key(0, "...")


def _shard_on_two_ranks(rank: int, port: int, word_folder: str, out: str) -> None:
    import os

    import components.recipes.shard as shard_module

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    shard_module.SHARD_SYNC_ITEMS = 4  # several meetings of the ranks over 12 items
    args = ["--data-dir", word_folder, "--out-dir", f"{out}/run", "--shard.output", f"{out}/shards"]
    code = run_steps("shard", args)
    if code != 0:
        raise SystemExit(f"rank {rank}: exit {code}")


@pytest.mark.slow
def test_under_ddp_rank_0_writes_the_same_shards_and_every_rank_reports_them(word_folder: Path, sharded: Path, tmp_path: Path) -> None:
    from test_runtime_helpers import free_port, spawn_and_join

    spawn_and_join(_shard_on_two_ranks, (free_port(), str(word_folder), str(tmp_path)), nprocs=2, timeout=240)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(p.name for p in sharded.iterdir())
    for path in sharded.iterdir():
        assert (tmp_path / "shards" / path.name).read_bytes() == path.read_bytes(), path.name
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["steps"]["shard"]
    assert summary["items"] == 12 and summary["shards"] == 3 and summary["skipped"] == 0


def test_a_file_that_breaks_after_opening_is_skipped_or_stops_the_step_leaving_nothing(word_folder: Path, tmp_path: Path) -> None:
    from components.errors import UsageError
    from components.recipes.shard import ShardJob, write_dataset_shards
    from test_runtime_helpers import make_stage

    root = tmp_path / "words"
    for name in ("yes/yes.0.wav", "no/no.0.wav", "no/no.1.wav"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes((word_folder / name).read_bytes())

    def encode(clip: torch.Tensor) -> tuple[dict[str, bytes], int, int]:
        return {"wav": b"RIFF"}, int(clip.shape[-1]), 0

    stage = make_stage(tmp_path / "run")
    for skip in (False, True):
        dataset = AudioFolder(root=str(root), sample_rate=16000, clip_seconds=None, cache=False, skip_bad_files=skip)
        (root / "no" / "no.1.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")  # after the header check
        job = ShardJob(tmp_path / f"out{skip}", "shard", None, None)
        if not skip:
            with pytest.raises(UsageError, match="no.1.wav"):
                write_dataset_shards(stage, dataset, job, encode)
            assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "words"]  # no partial folder left
        else:
            manifest = write_dataset_shards(stage, dataset, job, encode)
            assert manifest["num_items"] == 2 and manifest["skipped"] == [str(root / "no" / "no.1.wav")]
        (root / "no" / "no.1.wav").write_bytes((word_folder / "no" / "no.1.wav").read_bytes())


def test_a_symlinked_output_is_written_where_it_points(word_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "big" / "corpus").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "big" / "corpus")
    args = ["--data-dir", str(word_folder), "--out-dir", str(tmp_path / "run"), "--shard.output", str(tmp_path / "link"),
            "--shard.max_items", "100"]
    assert run_steps("shard", args) == 0
    assert (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in (tmp_path / "big" / "corpus").iterdir()) == ["manifest.json", "shard-000000.tar"]


def test_finished_shards_that_cannot_be_moved_into_place_are_kept_and_named(
    word_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import components.recipes.shard as shard_module

    def refuse(partial: Path, output: Path) -> None:
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(shard_module, "publish_folder", refuse)
    args = ["--data-dir", str(word_folder), "--out-dir", str(tmp_path / "run"), "--shard.output", str(tmp_path / "out"),
            "--shard.max_items", "100"]
    assert run_steps("shard", args) == 2
    error = capsys.readouterr().err
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert len(kept) == 1 and str(kept[0]) in error and "Device or resource busy" in error
    assert sorted(p.name for p in kept[0].iterdir()) == ["manifest.json", "shard-000000.tar"]


def _shard_step_outcomes_on_two_ranks(rank: int, port: int, out: str) -> None:
    """Rank ``rank`` of 2 runs the ``shard`` step three times on the smoke tones: rank 0 slow
    to publish, refused at publishing, unable to make its folder; each rank writes what the
    step gave it (its summary, or its UsageError) to ``rank<r>.json``."""
    import os
    import time

    import components.recipes.shard as shard_module
    from components.distributed import dist_info_from_env, init_distributed, shutdown_distributed
    from components.errors import UsageError
    from test_runtime_helpers import make_stage

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = dist_info_from_env()
    init_distributed(info, torch.device("cpu"))
    real_publish = shard_module.publish_folder

    def slow(partial: Path, output: Path) -> Path | None:
        time.sleep(1.5)  # the other rank has long finished its last write meeting
        return real_publish(partial, output)

    def refuse(partial: Path, output: Path) -> None:
        raise OSError(16, "Device or resource busy")

    (Path(out) / "a-file").write_text("in the way")
    outcomes = {}
    try:
        stage = make_stage(Path(out) / f"run{rank}", dist_info=info, section="shard")
        for name, publish, output in (("slow", slow, "slow"), ("refused", refuse, "refused"),
                                      ("no folder", real_publish, "a-file/shards")):
            if rank == 0:
                shard_module.publish_folder = publish
            try:
                outcomes[name] = write_shards(stage, output=f"{out}/{output}", max_items=10, num_workers=0).summary
            except UsageError as error:
                outcomes[name] = f"UsageError: {error}"
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(outcomes))
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_every_rank_reports_the_published_manifest_and_a_failure_on_rank_0_stops_every_rank(tmp_path: Path) -> None:
    from test_runtime_helpers import free_port, spawn_and_join

    spawn_and_join(_shard_step_outcomes_on_two_ranks, (free_port(), str(tmp_path)), nprocs=2, timeout=180)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # rank 1 reports what rank 0 published, though rank 0 renamed the folder into place late
    assert ranks[0]["slow"] == ranks[1]["slow"] and ranks[1]["slow"]["items"] == 32 and ranks[1]["slow"]["shards"] == 4
    assert json.loads((tmp_path / "slow" / "manifest.json").read_text())["num_items"] == 32
    # rank 0 failed after the last write meeting: the other rank stops too, with an error
    assert "could not be moved to" in ranks[0]["refused"] and "Device or resource busy" in ranks[0]["refused"]
    assert ranks[1]["refused"] == "UsageError: shard: rank 0 failed finishing the shards (its error says why)"
    # rank 0 failed before the first: the same (and no rank waits at a meeting rank 0 skipped)
    assert ranks[0]["no folder"].startswith(f"UsageError: cannot write beside {tmp_path / 'a-file' / 'shards'}")
    assert ranks[1]["no folder"] == "UsageError: shard: rank 0 failed writing the shards (its error says why)"
    assert (tmp_path / "a-file").read_text() == "in the way"


def test_an_output_folder_that_cannot_be_checked_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 checks the output folder before its all-reduce: an OSError there (an unreadable
    folder) must become the shared verdict, not a traceback that leaves the other ranks waiting."""
    from components.errors import UsageError
    from components.recipes import shard as shard_module
    from test_runtime_helpers import make_stage

    def unreadable(path: Path, overwrite: bool, flag: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shard_module, "check_output_folder", unreadable)
    stage = make_stage(tmp_path / "run", section="shard")
    with pytest.raises(UsageError, match=r"--shard.output .*out: cannot be checked \(Permission denied\)"):
        shard_module.resolve_output(stage, str(tmp_path / "out"), False, "shards")
