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
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generator.build import build_spec, load_index
from speech import VOICES, require_speech_tools, spoken_word_folder
from test_embed_similarity import brute_force_ranking, run_tones
from test_shipped_specs import clean_env

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "folder_audio.yaml"
WORDS = ("yes", "no", "up", "down")
HAS_FIFTYONE = importlib.util.find_spec("fiftyone") is not None
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
