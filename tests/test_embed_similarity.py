"""Similarity search after ``embed`` (issue 12 item 4a): ``--embed.query`` and the per-class
nearest-neighbour agreement of the embed summary.

The end-to-end part runs the emitted ``folder_audio`` script on real spoken words (espeak-ng +
sox; 4 words x 3 voices x 2 speeds = 24 clips of 0.2-1.5 s) with a small random-init encoder
(``--pretrain.epochs 0``): one full run, then ``--resume`` runs that change only the query (the
earlier steps are reused and the embeddings come from the cache). Every result is checked
against a brute-force cosine search over the ``embeddings.pt`` the run wrote.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from components.data.synthetic import SyntheticIQ
from components.errors import UsageError
from components.recipes.embed import report_agreement
from components.recipes.similarity import load_query_clip, most_similar, nearest_neighbour_agreement, resolve_query
from components.runtime import run_pipeline
from generator.build import build_spec, load_index
from speech import VOICES, require_speech_tools, spoken_word_folder
import test_runtime_helpers as helpers
from test_runtime_helpers import ToneDataset, free_port, make_stage, spawn_and_join
from test_shipped_specs import clean_env

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "folder_audio.yaml"
WORDS = ("yes", "no", "up", "down")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


def brute_force_ranking(embeddings: torch.Tensor, query: list[float], exclude: int | None) -> list[tuple[int, float]]:
    rows = embeddings.double().tolist()
    scored = [(i, cosine(row, query)) for i, row in enumerate(rows) if i != exclude]
    return sorted(scored, key=lambda item: (-item[1], item[0]))


def brute_force_agreement(embeddings: torch.Tensor, labels: list[int]) -> tuple[float, dict[int, float]]:
    rows = embeddings.double().tolist()
    same = []
    for i, row in enumerate(rows):
        nearest = brute_force_ranking(embeddings, row, i)[0][0]
        same.append(labels[nearest] == labels[i])
    per_class = {c: sum(s for s, l in zip(same, labels) if l == c) / labels.count(c) for c in set(labels)}
    return sum(same) / len(same), per_class


# ---------------------------------------------------------------------------- the helpers


@given(seed=st.integers(0, 2**31 - 1), count=st.integers(2, 40), dim=st.integers(1, 8), classes=st.integers(1, 5))
def test_nearest_neighbour_agreement_matches_a_brute_force_search(seed: int, count: int, dim: int, classes: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(count, dim, generator=generator)
    labels = torch.randint(0, classes, (count,), generator=generator)
    names = [f"c{c}" for c in range(classes)]
    agreement = nearest_neighbour_agreement(embeddings, labels, names)
    overall, per_class = brute_force_agreement(embeddings, labels.tolist())
    assert agreement.items == count
    assert agreement.overall == pytest.approx(overall)
    assert agreement.per_class == pytest.approx({names[c]: share for c, share in per_class.items()})
    assert agreement.counts == {names[c]: labels.tolist().count(c) for c in per_class}


def test_nearest_neighbour_agreement_on_known_clusters() -> None:
    # two clusters in opposite directions; item 5, labelled "b", points along cluster "a"
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
    embeddings = torch.stack([a, a * 2, a * 1.5, b, b * 3, a * 5 + 0.02])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    agreement = nearest_neighbour_agreement(embeddings, labels, ["a", "b"])
    # a: each one's nearest is another "a"; b: 3 and 4 are each other's nearest, 5's is item 0
    assert agreement.per_class == {"a": 1.0, "b": pytest.approx(2 / 3)}
    assert agreement.overall == pytest.approx(5 / 6) and agreement.counts == {"a": 3, "b": 3}
    assert nearest_neighbour_agreement(embeddings[:1], labels[:1], ["a", "b"]).overall is None


def test_agreement_over_a_large_set_is_measured_on_a_seeded_sample() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(300) % 3
    embeddings = torch.randn(300, 8, generator=generator) + 4 * torch.eye(8)[labels]
    sampled = nearest_neighbour_agreement(embeddings, labels, ["a", "b", "c"], max_items=120)
    assert sampled.items == 120 and sampled.sampled_from == 300 and sum(sampled.counts.values()) == 120
    assert "over 120 items (a seeded sample of 300)" in sampled.describe()
    assert sampled == nearest_neighbour_agreement(embeddings, labels, ["a", "b", "c"], max_items=120)
    whole = nearest_neighbour_agreement(embeddings, labels, ["a", "b", "c"])
    assert whole.items == 300 and whole.sampled_from is None
    assert abs(sampled.overall - whole.overall) < 0.1


@given(seed=st.integers(0, 2**31 - 1), count=st.integers(2, 30), k=st.integers(1, 40))
def test_most_similar_is_the_brute_force_ranking_without_the_query_itself(seed: int, count: int, k: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(count, 5, generator=generator)
    query = int(torch.randint(0, count, (), generator=generator))
    found = most_similar(embeddings, embeddings[query], k, exclude=query)
    expected = brute_force_ranking(embeddings, embeddings[query].double().tolist(), query)[:k]
    assert [i for i, _ in found] == [i for i, _ in expected] and query not in [i for i, _ in found]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert len(found) == min(k, count - 1)


def test_a_query_is_an_index_or_a_path_and_a_bad_one_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clips = [tmp_path / "data" / name for name in ("a.wav", "b.wav")]
    for clip in clips:
        clip.parent.mkdir(exist_ok=True)
        clip.write_bytes(b"")
    keys = [str(clip) for clip in clips]
    assert resolve_query("1", keys, "--embed.query").index == 1
    monkeypatch.chdir(tmp_path / "data")
    target = resolve_query("./b.wav", keys, "--embed.query")  # relative, another spelling
    assert (target.index, target.path) == (1, keys[1])
    outside = tmp_path / "c.wav"
    outside.write_bytes(b"")
    assert resolve_query(str(outside), keys, "--embed.query").index is None
    with pytest.raises(UsageError, match=r"--embed.query 2: index out of range: the data set has 2 items \(0 to 1\)"):
        resolve_query("2", keys, "--embed.query")
    with pytest.raises(UsageError, match="index out of range"):
        resolve_query("-1", keys, "--embed.query")
    with pytest.raises(UsageError, match="--embed.query missing.wav: no such file, and not a clip of the data set"):
        resolve_query("missing.wav", keys, "--embed.query")


def test_a_file_outside_the_data_set_must_be_audio_it_can_read(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio\n")
    target = resolve_query(str(notes), ["index:0"], "--embed.query")
    with pytest.raises(UsageError, match=f"--embed.query {notes}: not an audio file ToneDataset can read"):
        load_query_clip(ToneDataset(), target, "--embed.query")
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as handle:  # 16-bit PCM at 16 kHz, read at the data set's 8 kHz
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
        handle.writeframes(b"\x00\x10" * 1600)
    clip = load_query_clip(ToneDataset(), resolve_query(str(wav), ["index:0"], "--embed.query"), "--embed.query")
    assert clip.shape == (800,) and clip.dtype == torch.float32
    with pytest.raises(UsageError, match="SyntheticIQ does not read audio files"):
        load_query_clip(SyntheticIQ(), target, "--embed.query")


def test_a_tiny_set_gets_the_guard_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage = make_stage(tmp_path, section="embed")
    payload = {"embeddings": torch.randn(6, 4), "labels": torch.tensor([0, 1, 2, 3, 0, 1]), "class_names": ["t0", "t1", "t2", "t3"]}
    agreement = report_agreement(stage, payload)
    out = capsys.readouterr().out
    assert agreement.items == 6
    assert "warning: nearest-neighbour agreement of ToneDataset holds 6 items (fewer than 10 for 4 classes)" in out, out
    assert "nearest-neighbour class agreement (cosine) over 6 items" in out


# ------------------------------------------------------------------- under torchrun (DDP)


@dataclass
class EmbedConfig(helpers.EmbedConfig):
    """The embed section as the generator renders it from the recipe's signature."""

    hear_module: bool = False
    query: str | None = None
    query_k: int = 10
    fiftyone: str | None = None
    fiftyone_persistent: bool = False


@dataclass
class Config(helpers.Config):
    embed: EmbedConfig = field(default_factory=EmbedConfig)


def run_tones(argv: list[str]) -> int:
    """``pretrain`` (``--pretrain.epochs 0`` gives the random-init encoder) and ``embed`` on tones."""
    torch.set_num_threads(1)
    steps = (helpers.ALL_STEPS[0], helpers.ALL_STEPS[2])
    return run_pipeline(helpers.make_pipeline(steps), Config, argv)


def _ddp_worker(rank: int, world_size: int, ports: tuple[int, int], out_dir: str, wav: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    codes = []
    os.environ["MASTER_PORT"] = str(ports[0])  # a file outside the data set: rank 0 embeds it alone
    codes.append(run_tones(["--smoke", "--out-dir", f"{out_dir}/query", "--pretrain.epochs", "0", "--embed.query", wav, "--embed.query_k", "3"]))
    os.environ["MASTER_PORT"] = str(ports[1])  # refused on every rank, not only where it is found
    sys.modules["fiftyone"] = None  # type: ignore[assignment]
    codes.append(run_tones(["--smoke", "--out-dir", f"{out_dir}/fiftyone", "--pretrain.epochs", "0", "--embed.fiftyone", "clips"]))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(codes))


@pytest.mark.slow
def test_a_query_and_a_refused_export_under_two_process_ddp(tmp_path: Path) -> None:
    tones = helpers.ToneDataset(sample_rate=8000)
    wav = tmp_path / "tone5.wav"  # item 5's audio, as 16-bit PCM
    samples = (tones.load(5).clamp(-1, 1) * 32767).round().short()
    with wave.open(str(wav), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(8000)
        handle.writeframes(samples.numpy().tobytes())
    spawn_and_join(_ddp_worker, (2, (free_port(), free_port()), str(tmp_path), str(wav)), nprocs=2, timeout=300)
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)] == [[0, 2], [0, 2]]
    similar = json.loads((tmp_path / "query" / "embed" / "similar.json").read_text())
    assert similar["query"]["in_data_set"] is False and len(similar["neighbours"]) == 3
    # (clipped to [-1, 1] and rounded to 16 bits: close to item 5, closer than any other clip)
    assert similar["neighbours"][0]["index"] == 5 and similar["neighbours"][0]["similarity"] > 0.998
    summary = json.loads((tmp_path / "query" / "summary.json").read_text())["steps"]["embed"]
    assert summary["nn_agreement"]["items"] == 32 and not (tmp_path / "fiftyone" / "embed" / "embeddings.pt").exists()


def _slow_export_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), SIGMAE_DIST_TIMEOUT="6", SIGMAE_MAIN_WAIT_TIMEOUT="120")
    import matplotlib.pyplot  # noqa: F401  (imported up front by both ranks, not by rank 0 alone mid-run)

    embed_module = sys.modules["components.recipes.embed"]  # (``components.recipes.embed`` is also the recipe)

    def slow_export(stage, payload: dict, **settings) -> dict:  # rank 0's export, longer than a collective may wait
        time.sleep(10)
        return {"name": settings["name"], "samples": len(payload["paths"])}

    embed_module.export_fiftyone = slow_export
    embed_module.check_fiftyone_target = lambda run, name, flag: None
    code = run_tones(["--smoke", "--out-dir", f"{out_dir}/run", "--pretrain.epochs", "0", "--embed.fiftyone", "clips"])
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(code))


@pytest.mark.slow
def test_the_other_ranks_wait_for_an_export_longer_than_the_collective_timeout(tmp_path: Path) -> None:
    spawn_and_join(_slow_export_worker, (2, free_port(), str(tmp_path)), nprocs=2, timeout=300)
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)] == [0, 0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["steps"]["embed"]
    assert summary["fiftyone"] == {"name": "clips", "samples": 32}


# ---------------------------------------------------------------- end to end, real speech


def run_script(run: dict, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(run["script"]), *run["base"], *flags],
        cwd=run["work"], env=clean_env(), capture_output=True, text=True, timeout=300,
    )


def printed_neighbours(stdout: str) -> list[tuple[float, str, str]]:
    """(similarity, label, path) of each printed result line."""
    lines = re.findall(r"^\[embed\]\s+\d+\. ([+-]\d\.\d{4})  (\S+)  (.+)$", stdout, flags=re.MULTILINE)
    return [(float(s), label, path) for s, label, path in lines]


@pytest.fixture(scope="module")
def words_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build ``folder_audio``, run it once on spoken words with ``--embed.query 0``."""
    require_speech_tools()
    work = tmp_path_factory.mktemp("similar")
    words = spoken_word_folder(work / "words", words=WORDS, voices=VOICES[:3])
    build_spec(SPEC, work / "build", index=load_index())
    out = work / "run"
    base = ["--data-dir", str(words), "--out-dir", str(out), "--dtype", "fp32", "--data.cache_dir", str(work / "cache"),
            "--pretrain.epochs", "0", "--model.preset", "tiny", "--model.depth", "1", "--model.decoder_depth", "1",
            "--probe.epochs", "1", "--probe.num_workers", "0", "--embed.num_workers", "0"]
    run = {"script": work / "build" / "folder_audio" / "folder_audio.py", "base": base, "work": work, "out": out}
    first = run_script(run, "--embed.query", "0", "--embed.query_k", "5")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    payload = torch.load(out / "embed" / "embeddings.pt", map_location="cpu", weights_only=True)
    return {**run, "first": first, "payload": payload, "summary": json.loads((out / "summary.json").read_text())["steps"]["embed"],
            "similar": json.loads((out / "embed" / "similar.json").read_text())}


def label_of(payload: dict, index: int) -> str:
    return payload["class_names"][int(payload["labels"][index])]


@pytest.mark.slow
def test_an_index_query_prints_the_nearest_clips_without_itself(words_run: dict) -> None:
    payload, similar = words_run["payload"], words_run["similar"]
    embeddings = payload["embeddings"]
    assert embeddings.shape[0] == len(WORDS) * 3 * 2
    expected = brute_force_ranking(embeddings, embeddings[0].double().tolist(), 0)[:5]
    assert [n["index"] for n in similar["neighbours"]] == [i for i, _ in expected]
    assert [n["similarity"] for n in similar["neighbours"]] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert [n["path"] for n in similar["neighbours"]] == [payload["paths"][i] for i, _ in expected]
    assert [n["label"] for n in similar["neighbours"]] == [label_of(payload, i) for i, _ in expected]
    assert similar["query"] == {"text": "0", "index": 0, "path": payload["paths"][0], "label": label_of(payload, 0), "in_data_set": True}
    # printed: one line per clip, with similarity, class name and path, best first
    printed = printed_neighbours(words_run["first"].stdout)
    assert printed == [(round(s, 4), label_of(payload, i), payload["paths"][i]) for i, s in expected], words_run["first"].stdout
    assert words_run["summary"]["similar"] == str(words_run["out"] / "embed" / "similar.json")


@pytest.mark.slow
def test_the_summary_reports_per_class_nearest_neighbour_agreement(words_run: dict) -> None:
    payload, summary = words_run["payload"], words_run["summary"]
    overall, per_class = brute_force_agreement(payload["embeddings"], payload["labels"].tolist())
    agreement = summary["nn_agreement"]
    assert agreement["items"] == 24 and agreement["overall"] == pytest.approx(overall)
    assert agreement["per_class"] == pytest.approx({payload["class_names"][c]: share for c, share in per_class.items()})
    assert sorted(agreement["per_class"]) == sorted(WORDS) and set(agreement["counts"].values()) == {6}
    line = next(l for l in words_run["first"].stdout.splitlines() if "nearest-neighbour class agreement" in l)
    assert f"over 24 items: {overall:.3f} overall;" in line and all(f"{w} " in line for w in WORDS), line


@pytest.mark.slow
def test_a_path_query_finds_the_clip_in_the_data_set_and_excludes_it(words_run: dict) -> None:
    payload = words_run["payload"]
    index = 9
    relative = Path(payload["paths"][index]).relative_to(words_run["work"])  # the run's cwd
    result = run_script(words_run, "--resume", "--embed.query", str(relative), "--embed.query_k", "100")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "embedding cache hit" in result.stdout  # the query changes nothing the embeddings depend on
    similar = json.loads((words_run["out"] / "embed" / "similar.json").read_text())
    assert similar["query"]["index"] == index and similar["query"]["path"] == payload["paths"][index]
    embeddings = payload["embeddings"]
    expected = brute_force_ranking(embeddings, embeddings[index].double().tolist(), index)
    assert [n["index"] for n in similar["neighbours"]] == [i for i, _ in expected]  # all 23 others, k capped
    assert len(printed_neighbours(result.stdout)) == 23


@pytest.mark.slow
def test_a_file_outside_the_data_set_is_embedded_as_the_clips_were(words_run: dict) -> None:
    payload = words_run["payload"]
    copy = words_run["work"] / "elsewhere" / "copy.wav"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(payload["paths"][14], copy)  # the same audio under another path
    result = run_script(words_run, "--resume", "--embed.query", str(copy), "--embed.query_k", "3")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    similar = json.loads((words_run["out"] / "embed" / "similar.json").read_text())
    assert similar["query"]["index"] is None and similar["query"]["in_data_set"] is False
    nearest = similar["neighbours"][0]
    assert nearest["index"] == 14 and nearest["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert len(similar["neighbours"]) == 3  # nothing excluded
    assert "not in the data set" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("query", "message"),
    [("24", "--embed.query 24: index out of range: the data set has 24 items (0 to 23)"),
     ("nothere.wav", "--embed.query nothere.wav: no such file, and not a clip of the data set")],
)
def test_a_bad_query_exits_2_with_one_line_naming_the_flag(words_run: dict, query: str, message: str) -> None:
    result = run_script(words_run, "--resume", "--embed.query", query)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
