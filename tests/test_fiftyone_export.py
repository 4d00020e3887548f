"""FiftyOne export of ``embed`` (issue 12 item 4b): ``--embed.fiftyone NAME``.

Without fiftyone the flag stops the run before anything is computed, with one line saying
what to install (tested everywhere). With the real package (``make test-fiftyone`` makes a
venv that has it, with the MongoDB it starts) the emitted ``folder_audio`` script exports 16
real spoken words; a separate process then reads the dataset back from FiftyOne's database:
samples, labels, audio paths, embeddings, spectrogram PNGs, the similarity index
(``sort_by_similarity``, checked against a brute-force cosine ranking of ``embeddings.pt``) and
the 2-D visualisation. FiftyOne's database and config live in a temporary HOME, never the
user's.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import types
import warnings
from pathlib import Path

import pytest
import torch

from components.contracts.data import tone_clip, write_pcm_wav
from components.data.audio_folder import AudioFolder
from components.data.shards import AudioShards
from components.errors import UsageError
from components.recipes.fiftyone_export import export_fiftyone, spectrogram, write_spectrograms
from generator.build import build_spec, load_index
from speech import VOICES, require_speech_tools, spoken_word_folder
from test_embed_similarity import brute_force_ranking, run_tones
from test_runtime_helpers import make_stage
from test_shipped_specs import clean_env

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "folder_audio.yaml"
WORDS = ("yes", "no", "up", "down")
HAS_FIFTYONE = importlib.util.find_spec("fiftyone") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
requires_matplotlib = pytest.mark.skipif(not HAS_MATPLOTLIB, reason="the spectrogram images need matplotlib")
requires_fiftyone = pytest.mark.skipif(
    not HAS_FIFTYONE, reason="fiftyone is not installed here: `make test-fiftyone` runs these tests in a venv that has it"
)


def test_without_fiftyone_the_flag_stops_the_run_before_embedding_and_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "fiftyone", None)  # `import fiftyone` raises ImportError
    code = run_tones(["--smoke", "--out-dir", str(tmp_path), "--pretrain.epochs", "0", "--embed.fiftyone", "clips"])
    err = capsys.readouterr().err
    assert code == 2 and "error: --embed.fiftyone needs the fiftyone package" in err and "pip install fiftyone" in err, err
    assert not (tmp_path / "embed" / "embeddings.pt").exists()


@requires_fiftyone
def test_without_matplotlib_the_export_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fiftyone  # noqa: F401  (the real package, imported before matplotlib goes missing)
    import fiftyone.brain  # noqa: F401

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = run_tones(["--smoke", "--out-dir", str(tmp_path), "--pretrain.epochs", "0", "--embed.fiftyone", "clips"])
    err = capsys.readouterr().err
    assert code == 2 and "needs matplotlib to draw the spectrogram images" in err and "pip install matplotlib" in err, err


# ------------------------------------------- the images: the record's own clip, current bytes
# (matplotlib draws them; FiftyOne itself is a stand-in here, so these run in every venv)


def tone_folder(root: Path) -> Path:
    """2 classes x 3 clips of 2048 samples at 8 kHz, each its own tone."""
    for label in range(2):
        for i in range(3):
            write_pcm_wav(root / f"class{label}" / f"clip{i}.wav", tone_clip(300.0 + 500 * label + 90 * i, 8000, 2048), 8000)
    return root


def expected_png(transform: torch.nn.Module, clip: torch.Tensor) -> bytes:
    """The PNG ``write_spectrograms`` draws for ``clip``."""
    import matplotlib.image

    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, spectrogram(transform, clip).numpy(), cmap="magma", origin="lower", format="png")
    return buffer.getvalue()


def embed_stage(tmp_path: Path, dataset) -> tuple:
    """A ``Stage`` of the ``embed`` step whose data set is ``dataset``, and its transform."""
    stage = make_stage(tmp_path / "run", section="embed")
    stage.components._built["dataset"] = dataset  # the data set the run would have built
    return stage, stage.components.transform().eval()


def folder_with_a_clip_gone_bad(tmp_path: Path, skip_bad_files: bool) -> tuple[AudioFolder, int]:
    """An audio folder whose clip 2 is truncated after it opened (readable then, not now)."""
    dataset = AudioFolder(root=str(tone_folder(tmp_path / "audio")), sample_rate=8000, clip_seconds=None,
                          skip_bad_files=skip_bad_files, cache=False)
    with open(dataset.records[2].key, "r+b") as handle:
        handle.truncate(100)
    return dataset, 2


@requires_matplotlib
def test_an_unreadable_clip_gets_no_image_of_the_clip_standing_in_for_it(tmp_path: Path) -> None:
    import matplotlib.image

    dataset, bad = folder_with_a_clip_gone_bad(tmp_path, skip_bad_files=True)
    stage, transform = embed_stage(tmp_path, dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data set's own warning about the skipped file
        assert torch.equal(dataset[bad][0], dataset.load(bad + 1))  # ds[i] stands the next clip in
        paths, drawn = write_spectrograms(stage, dataset, transform, tmp_path / "png", matplotlib.image)
    assert paths[bad] is None and drawn == len(dataset) - 1
    for index, path in enumerate(paths):
        if index != bad:
            assert path.read_bytes() == expected_png(transform, dataset.load(index)), index


def fake_fiftyone(monkeypatch: pytest.MonkeyPatch) -> dict:
    """``fiftyone`` and ``fiftyone.brain`` stand-ins that keep what the exporter hands them."""
    made: dict = {"datasets": {}, "brain": []}

    class Dataset:
        def __init__(self, name: str) -> None:
            self.name, self.info, self.persistent, self.samples = name, {}, False, []
            made["datasets"][name] = self

        def save(self) -> None:
            pass

        def add_samples(self, samples: list, progress: bool = False) -> None:
            self.samples.extend(samples)

        def delete(self) -> None:
            del made["datasets"][self.name]

    fo = types.ModuleType("fiftyone")
    brain = types.ModuleType("fiftyone.brain")
    fo.Dataset, fo.brain = Dataset, brain
    fo.Sample = lambda **fields: fields
    fo.Classification = lambda label: {"label": label}
    fo.list_datasets = lambda: list(made["datasets"])
    fo.load_dataset = lambda name: made["datasets"][name]
    brain.compute_similarity = lambda dataset, **settings: made["brain"].append(("similarity", len(dataset.samples)))
    brain.compute_visualization = lambda dataset, **settings: made["brain"].append(("visualization", len(dataset.samples)))
    monkeypatch.setitem(sys.modules, "fiftyone", fo)
    monkeypatch.setitem(sys.modules, "fiftyone.brain", brain)
    return made


def payload_of(dataset) -> dict:
    return {
        "embeddings": torch.randn(len(dataset), 4, generator=torch.Generator().manual_seed(0)),
        "labels": torch.tensor([r.label for r in dataset.records]), "folds": torch.tensor([r.fold for r in dataset.records]),
        "paths": [r.key for r in dataset.records], "class_names": list(dataset.class_names), "checkpoint": "encoder.pt",
        "pooling": "mean",
    }


@requires_matplotlib
def test_the_export_leaves_out_an_unreadable_clip_and_every_image_shows_its_samples_audio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    made = fake_fiftyone(monkeypatch)
    dataset, bad = folder_with_a_clip_gone_bad(tmp_path, skip_bad_files=True)
    stage, transform = embed_stage(tmp_path, dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = export_fiftyone(stage, payload_of(dataset), name="clips", persistent=False, cache_dir=tmp_path / "cache")
    out = capsys.readouterr().out
    samples = made["datasets"]["clips"].samples
    assert [s["index"] for s in samples] == [i for i in range(len(dataset)) if i != bad]
    for sample in samples:
        own = [r.key for r in dataset.records].index(sample["audio_path"])
        assert own == sample["index"]
        assert Path(sample["filepath"]).read_bytes() == expected_png(transform, dataset.load(own)), sample["audio_path"]
    assert summary["samples"] == len(dataset) - 1 and summary["unreadable_left_out"] == 1
    assert made["brain"] == [("similarity", len(dataset) - 1), ("visualization", len(dataset) - 1)]
    assert "warning: --embed.fiftyone clips: left out 1 clip(s) that cannot be read any more" in out, out
    assert dataset.records[bad].key in out and "1 unreadable left out" in out


@requires_matplotlib
def test_without_skip_bad_files_an_unreadable_clip_stops_the_export_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = fake_fiftyone(monkeypatch)
    dataset, bad = folder_with_a_clip_gone_bad(tmp_path, skip_bad_files=False)
    stage, _ = embed_stage(tmp_path, dataset)
    with pytest.raises(UsageError) as caught:
        export_fiftyone(stage, payload_of(dataset), name="clips", persistent=False, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert dataset.records[bad].key in message and "--data.skip_bad_files" in message and "\n" not in message
    assert made["datasets"] == {}


def write_wav_shard(path: Path, freqs: list[float]) -> None:
    """A tar shard of ``tone<i>.wav`` (2048 samples at 8 kHz, tone ``freqs[i]``) with ``tone<i>.cls``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, freq in enumerate(freqs):
            write_pcm_wav(path.parent / "member.wav", tone_clip(freq, 8000, 2048), 8000)
            members = {f"tone{i}.wav": (path.parent / "member.wav").read_bytes(), f"tone{i}.cls": str(i).encode()}
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (path.parent / "member.wav").unlink()


@requires_matplotlib
def test_a_rewritten_shard_gets_its_images_redrawn(tmp_path: Path) -> None:
    import matplotlib.image

    shard = tmp_path / "shards" / "train-000000.tar"
    write_wav_shard(shard, [400.0, 900.0])

    def export_images() -> tuple[AudioShards, list[Path], int]:
        dataset = AudioShards(shards=str(shard), sample_rate=8000, clip_seconds=None, cache=False)
        stage, transform = embed_stage(tmp_path, dataset)
        return (dataset, transform, *write_spectrograms(stage, dataset, transform, tmp_path / "png", matplotlib.image))

    _, _, first, drawn = export_images()
    assert drawn == 2 and export_images()[3] == 0  # the same shard: every image reused
    before = shard.stat()
    write_wav_shard(shard, [1500.0, 900.0])  # member tone0 rewritten, the shard's size unchanged
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert shard.stat().st_size == before.st_size
    dataset, transform, again, drawn = export_images()
    assert drawn == 2 and set(again).isdisjoint(first)
    assert again[0].read_bytes() == expected_png(transform, dataset.load(0)) != first[0].read_bytes()


# -------------------------------------------------------------- the real package, end to end

CHECKER = r'''
import json, sys
import fiftyone as fo

action = json.loads(sys.argv[1])
facts = {"datasets": sorted(fo.list_datasets())}
for name in action.get("read", []):
    if name not in facts["datasets"]:
        continue
    dataset = fo.load_dataset(name)
    samples = list(dataset.iter_samples())
    if dataset.info.get("created_by") != "sigmae-gen embed":
        facts[name] = {"count": len(dataset), "samples": [{"filepath": s.filepath} for s in samples]}
        continue
    by_id = {sample.id: sample["index"] for sample in samples}
    first = next(sample for sample in samples if sample["index"] == 0)
    ranked = dataset.sort_by_similarity(first.id, k=10, brain_key="sigmae_similarity")
    visualization = dataset.load_brain_results("sigmae_visualization")
    facts[name] = {
        "count": len(dataset), "persistent": dataset.persistent, "info": dict(dataset.info),
        "brain_keys": sorted(dataset.list_brain_runs()),
        "samples": [{"index": s["index"], "filepath": s.filepath, "audio_path": s["audio_path"], "label": s["ground_truth"].label,
                     "fold": s["fold"], "embedding": [float(v) for v in s["embedding"]]} for s in samples],
        "ranked": [by_id[s.id] for s in ranked],
        "points": list(visualization.points.shape),
    }
if action.get("create"):  # a dataset of the user's own, not made by the exporter
    own = fo.Dataset(action["create"], persistent=True)
    own.add_sample(fo.Sample(filepath="/tmp/not-an-image.png", note="mine"))
print("FACTS " + json.dumps(facts))
'''


def fiftyone_env(home: Path) -> dict[str, str]:
    """FiftyOne's database, config and caches under ``home``; no usage tracking."""
    env = clean_env()
    env.update(HOME=str(home), FIFTYONE_DATABASE_DIR=str(home / "db"), FIFTYONE_DO_NOT_TRACK="true")
    return env


def check(run: dict, **action) -> dict:
    result = subprocess.run([sys.executable, "-I", "-c", CHECKER, json.dumps(action)], cwd=run["work"], env=run["env"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.split("FACTS ", 1)[1])


def export(run: dict, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(run["script"]), *run["base"], *flags], cwd=run["work"], env=run["env"],
                          capture_output=True, text=True, timeout=600)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Export, read back (and add a user's own dataset), re-export, export over the user's
    dataset (refused), export without persistence; read everything back once more."""
    require_speech_tools()
    work = tmp_path_factory.mktemp("fiftyone")
    words = spoken_word_folder(work / "words", words=WORDS, voices=VOICES[:2])
    build_spec(SPEC, work / "build", index=load_index())
    out = work / "run"
    base = ["--data-dir", str(words), "--out-dir", str(out), "--dtype", "fp32", "--data.cache_dir", str(work / "cache"),
            "--pretrain.epochs", "0", "--model.preset", "tiny", "--model.depth", "1", "--model.decoder_depth", "1",
            "--probe.epochs", "1", "--probe.eval_folds", "4", "--probe.num_workers", "0", "--embed.num_workers", "0"]
    run = {"script": work / "build" / "folder_audio" / "folder_audio.py", "base": base, "work": work,
           "env": fiftyone_env(work / "home")}
    results = {"first": export(run, "--embed.fiftyone", "words", "--embed.fiftyone_persistent", "true")}
    assert results["first"].returncode == 0, results["first"].stdout[-3000:] + results["first"].stderr[-3000:]
    summaries = {"first": json.loads((out / "summary.json").read_text())["steps"]["embed"]}
    payload = torch.load(out / "embed" / "embeddings.pt", map_location="cpu", weights_only=True)
    facts = {"first": check(run, read=["words"], create="users_own")}
    changed = Path(payload["paths"][5])
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))  # an edited file
    # the script run again, as a user re-exports (the same settings: --resume would skip the step)
    results["again"] = export(run, "--embed.fiftyone", "words", "--embed.fiftyone_persistent", "true")
    assert results["again"].returncode == 0, results["again"].stdout[-3000:] + results["again"].stderr[-3000:]
    summaries["again"] = json.loads((out / "summary.json").read_text())["steps"]["embed"]
    results["foreign"] = export(run, "--resume", "--embed.fiftyone", "users_own")
    results["session"] = export(run, "--resume", "--embed.fiftyone", "words_session")
    assert results["session"].returncode == 0, results["session"].stdout[-3000:] + results["session"].stderr[-3000:]
    facts["last"] = check(run, read=["words", "users_own"])
    return {"payload": payload, "results": results, "summaries": summaries, "facts": facts, "work": work}


@pytest.mark.slow
@requires_fiftyone
def test_every_clip_is_a_sample_with_its_label_audio_path_and_embedding(exported: dict) -> None:
    payload, dataset = exported["payload"], exported["facts"]["first"]["words"]
    assert dataset["count"] == len(payload["paths"]) == len(WORDS) * 2 * 2
    assert dataset["persistent"] is True and dataset["info"]["created_by"] == "sigmae-gen embed"
    for sample in dataset["samples"]:
        index = sample["index"]
        assert sample["audio_path"] == payload["paths"][index] and Path(sample["audio_path"]).is_file()
        assert sample["label"] == payload["class_names"][int(payload["labels"][index])] == Path(sample["audio_path"]).parent.name
        assert sample["fold"] == int(payload["folds"][index])
        assert sample["embedding"] == pytest.approx(payload["embeddings"][index].tolist(), abs=1e-6)
    summary = exported["summaries"]["first"]["fiftyone"]
    assert summary["name"] == "words" and summary["samples"] == 16 and summary["spectrograms_drawn"] == 16


@pytest.mark.slow
@requires_fiftyone
def test_the_media_are_spectrogram_pngs_of_the_model_window(exported: dict) -> None:
    samples = exported["facts"]["first"]["words"]["samples"]
    paths = [Path(sample["filepath"]) for sample in samples]
    assert len(set(paths)) == len(paths) and all(path.is_file() for path in paths)
    assert {png_size(path) for path in paths} == {(200, 80)}  # 200 frames wide, 80 mel bins high
    folder = Path(exported["summaries"]["first"]["fiftyone"]["spectrograms"])
    assert all(path.parent == folder for path in paths)


@pytest.mark.slow
@requires_fiftyone
def test_sort_by_similarity_returns_the_nearest_clips_first(exported: dict) -> None:
    dataset = exported["facts"]["first"]["words"]
    # FiftyOne's sklearn index ranks by the cosine of mean-centred embeddings (--embed.query by
    # the plain cosine: README, "Similarity search")
    centred = exported["payload"]["embeddings"].double()
    centred = centred - centred.mean(dim=0)
    expected = [i for i, _ in brute_force_ranking(centred, centred[0].tolist(), None)[:10]]
    assert dataset["ranked"][0] == 0 and dataset["ranked"][1] == expected[1]  # itself, then its nearest clip
    assert dataset["ranked"] == expected
    assert set(dataset["brain_keys"]) == {"sigmae_similarity", "sigmae_visualization"}
    assert dataset["points"] == [16, 2]


@pytest.mark.slow
@requires_fiftyone
def test_a_re_export_replaces_its_own_dataset_and_redraws_only_changed_clips(exported: dict) -> None:
    result, summary = exported["results"]["again"], exported["summaries"]["again"]["fiftyone"]
    assert summary["spectrograms_drawn"] == 1, result.stdout  # the file whose modification time changed
    assert "1 spectrograms drawn, 15 reused" in result.stdout
    again = exported["facts"]["last"]["words"]
    assert again["count"] == 16 and again["ranked"] == exported["facts"]["first"]["words"]["ranked"]
    first_paths = {s["index"]: s["filepath"] for s in exported["facts"]["first"]["words"]["samples"]}
    changed = [s["index"] for s in again["samples"] if s["filepath"] != first_paths[s["index"]]]
    assert changed == [5]


@pytest.mark.slow
@requires_fiftyone
def test_a_dataset_of_the_same_name_that_it_did_not_make_is_left_alone(exported: dict) -> None:
    result = exported["results"]["foreign"]
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "--embed.fiftyone users_own: a FiftyOne dataset of that name exists and was not exported by this script" in result.stderr
    assert "Traceback" not in result.stderr
    own = exported["facts"]["last"]["users_own"]
    assert own["count"] == 1 and own["samples"][0]["filepath"] == "/tmp/not-an-image.png"


@pytest.mark.slow
@requires_fiftyone
def test_a_dataset_persists_only_when_asked(exported: dict) -> None:
    assert "not persistent" in exported["results"]["session"].stdout
    datasets = exported["facts"]["last"]["datasets"]
    assert "words" in datasets and "users_own" in datasets
    assert "words_session" not in datasets  # gone once the exporting process closed the database


def test_a_database_that_cannot_be_asked_is_one_line_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The main rank asks the database before its all-reduce; an error there must become the
    verdict every rank hears (a raise before the reduce would leave the other ranks waiting)."""
    pytest.importorskip("matplotlib")
    from components.recipes.fiftyone_export import check_fiftyone_target
    from components.runtime import RunRecord
    from test_runtime_helpers import make_stage

    made = fake_fiftyone(monkeypatch)

    def unreachable() -> list:
        raise RuntimeError("could not connect to the database service")

    monkeypatch.setattr(sys.modules["fiftyone"], "list_datasets", unreachable)
    run: RunRecord = make_stage(tmp_path).run
    with pytest.raises(UsageError, match=r"--embed.fiftyone sigmae_x: fiftyone's database cannot be asked \(could not connect"):
        check_fiftyone_target(run, "sigmae_x", "--embed.fiftyone")
    assert made["datasets"] == {}
