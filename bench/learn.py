"""Does MAE pre-training help? A learning benchmark on real (synthesised) speech, one CPU budget.

    python bench/learn.py                       # ~10 minutes on 2 CPU cores
    python bench/learn.py --minutes 3           # shorter: fewer steps, same protocol
    python bench/learn.py --work /tmp/lw --keep --flag pretrain.norm_pix_loss=true

Not a timed test: it prints accuracies, not speeds. It synthesises spoken words at run time
with espeak-ng (``--words`` words x ``--voices`` voices x 3 speeds x 3 pitches, trimmed of
silence and resampled to 16 kHz with sox), writes them as a WAV folder with a CSV
(``filepath,label,fold``) whose fold is the voice, and holds out whole voices: every
evaluation is speaker-disjoint. It builds ``bench/learn_words.yaml`` with ``sigmae-gen`` into
the work folder and drives the emitted script as a user would (a subprocess with flags), twice
with the same seed and the same step counts:

- **random**: pre-training skipped (``--pretrain.epochs 0`` where the script has it; on older
  scripts one epoch at lr 1e-12), then linear probe, k-NN and fine-tuning of the random-init
  encoder (= fine-tuning from scratch);
- **mae**: MAE pre-training on the training voices, then the same probe, k-NN and fine-tuning.

Beside them the bench computes mean-pooled log-mel features itself (the catalog's ``LogMel``
with the spec's settings, whole clip) and trains a torch logistic regression on them. The
step counts come from the budget (``--minutes``): a few training steps of the spec's model are
timed in-process first, and pre-training gets about half of the time that is left.

Prints one table and the pre-training loss curve (a PNG too when matplotlib is installed);
writes everything to ``<work>/learn_results.json`` (and ``--json PATH``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPEC = ROOT / "bench" / "learn_words.yaml"

WORDS = (
    "zero one two three four five six seven eight nine yes no up down left right on off stop go"
).split()
# espeak-ng accents (all English) x voice variants: distinct "speakers" (timbre, gender, accent).
VOICES = (
    "en-us",
    "en-gb+f2",
    "en-gb-scotland+m3",
    "en-029+f4",
    "en-us-nyc+m5",
    "en-gb-x-rp+f1",
    "en-gb-x-gbclan+m2",
    "en-gb-x-gbcwmd+f3",
    "en-us+klatt",
    "en-gb+m7",
    "en-gb-scotland+f5",
    "en-029+m4",
    "en-us-nyc+f2",
    "en-gb-x-rp+m6",
    "en-gb-x-gbclan+f4",
    "en-gb-x-gbcwmd+m1",
)
SPEEDS = (130, 165, 200)  # words per minute
PITCHES = (25, 50, 75)  # espeak-ng pitch, 0-99
SAMPLE_RATE = 16000


# ---------------------------------------------------------------------------------------------
# Data: spoken words, one fold per voice
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    path: str  # relative to the data folder
    word: str
    voice: str
    fold: int  # 1-based voice index: one voice, one fold


def tool_missing() -> str | None:
    """The first of espeak-ng / sox that is not on PATH, else None."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            return tool
    return None


def voice_slug(voice: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", voice).strip("-")


def synthesize_clip(text: str, voice: str, speed: int, pitch: int, out: Path) -> None:
    """espeak-ng -> sox: mono 16-bit 16 kHz, leading and trailing silence trimmed."""
    speech = subprocess.run(
        [
            "espeak-ng",
            "-v",
            voice,
            "-s",
            str(speed),
            "-p",
            str(pitch),
            "--stdout",
            text,
        ],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(
        [
            "sox",
            "-q",
            "-t",
            "wav",
            "-",
            "-r",
            str(SAMPLE_RATE),
            "-b",
            "16",
            "-c",
            "1",
            str(out),
            "silence",
            "1",
            "0.01",
            "-45d",
            "reverse",
            "silence",
            "1",
            "0.01",
            "-45d",
            "reverse",
        ],
        input=speech,
        check=True,
        capture_output=True,
    )


def make_dataset(
    data_dir: Path, words: list[str], voices: list[str], workers: int = 2
) -> tuple[list[Clip], float]:
    """Write ``data_dir/<word>/<voice>_s<speed>_p<pitch>.wav`` and ``clips.csv``; reuse a complete set.

    Returns the clips and the seconds spent synthesising (0 when reused).
    """
    clips: list[Clip] = []
    jobs: list[tuple[str, str, int, int, Path]] = []
    for fold, voice in enumerate(voices, start=1):
        for word in words:
            for speed in SPEEDS:
                for pitch in PITCHES:
                    relative = f"{word}/{voice_slug(voice)}_s{speed}_p{pitch}.wav"
                    clips.append(Clip(relative, word, voice, fold))
                    jobs.append((word, voice, speed, pitch, data_dir / relative))
    listing = "".join(f"{c.path},{c.word},{c.fold}\n" for c in clips)
    manifest = data_dir / "clips.csv"
    if manifest.is_file() and manifest.read_text() == "filepath,label,fold\n" + listing:
        if all((data_dir / c.path).is_file() for c in clips):
            return clips, 0.0
    started = time.perf_counter()
    for word in words:
        (data_dir / word).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(lambda job: synthesize_clip(*job), jobs))
    manifest.write_text("filepath,label,fold\n" + listing)
    return clips, time.perf_counter() - started


def read_wav(path: Path):
    """A 16-bit mono WAV as a float32 tensor in [-1, 1]."""
    import torch

    with wave.open(str(path), "rb") as handle:
        if handle.getsampwidth() != 2 or handle.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono PCM")
        frames = handle.readframes(handle.getnframes())
    return torch.frombuffer(bytearray(frames), dtype=torch.int16).float() / 32768.0


def split_voices(num_voices: int, eval_voices: int) -> tuple[list[int], list[int]]:
    """Folds (= voices) to train on and to evaluate on: every k-th voice is held out."""
    if not 1 <= eval_voices < num_voices:
        raise ValueError(
            f"need 1 <= eval voices < voices, got {eval_voices} of {num_voices}"
        )
    stride = num_voices / eval_voices
    held = sorted({num_voices - int(i * stride) for i in range(eval_voices)})
    return [f for f in range(1, num_voices + 1) if f not in held], held


# ---------------------------------------------------------------------------------------------
# Spec, overrides and the time budget
# ---------------------------------------------------------------------------------------------


def load_spec(path: Path = SPEC) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


def parse_flags(items: list[str]) -> dict[str, dict[str, str]]:
    """``["model.depth=2", ...]`` -> ``{"model": {"depth": "2"}}`` (values as the script's flags take them)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not section or not name:
            raise SystemExit(f"--flag wants SECTION.FIELD=VALUE, got {item!r}")
        out.setdefault(section, {})[name] = value
    return out


def typed(value: str) -> Any:
    import yaml

    return yaml.safe_load(value)


def section_settings(
    spec: dict[str, Any], flags: dict[str, dict[str, str]], section: str
) -> dict[str, Any]:
    """A component section's ``with:`` block with the ``--flag`` overrides applied (typed)."""
    settings = dict(spec[section].get("with") or {})
    settings.update({k: typed(v) for k, v in flags.get(section, {}).items()})
    return settings


def recipe_settings(
    spec: dict[str, Any], flags: dict[str, dict[str, str]], name: str
) -> dict[str, Any]:
    for step in spec["recipe"]:
        if step.get("name", step["use"]) == name:
            settings = dict(step.get("with") or {})
            settings.update({k: typed(v) for k, v in flags.get(name, {}).items()})
            return settings
    raise KeyError(name)


@dataclass
class Rates:
    """Seconds per optimizer step of the spec's model, measured in-process on this machine."""

    pretrain_s: float
    finetune_s: float
    embed_s_per_item: float


def time_steps(
    spec: dict[str, Any], flags: dict[str, dict[str, str]], repeats: int = 4
) -> Rates:
    """CPU seconds of one pre-training / fine-tuning step (front end, forward, backward, AdamW).

    Measured on one thread, in CPU time, the fastest of ``repeats`` steps: on a shared machine
    wall time (and multi-threaded CPU time, which spins while waiting) measures the neighbours.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _time_steps(spec, flags, repeats)
    finally:
        torch.set_num_threads(threads)


def _time_steps(
    spec: dict[str, Any], flags: dict[str, dict[str, str]], repeats: int
) -> Rates:
    import torch

    from components.models.audiomae_pp import AudioMAEPlusPlus
    from components.models.classifier import AudioMAEClassifier
    from components.transforms.spectral import LogMel

    model_kw = section_settings(spec, flags, "model")
    model_kw = {k: tuple(v) if isinstance(v, list) else v for k, v in model_kw.items()}
    transform = LogMel(**section_settings(spec, flags, "transform"))
    seconds = float(section_settings(spec, flags, "data").get("clip_seconds") or 1.0)
    num_samples = int(seconds * SAMPLE_RATE)
    generator = torch.Generator().manual_seed(0)

    def run(module: torch.nn.Module, batch: int, loss_of) -> float:
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
        times = []
        for i in range(repeats + 1):
            audio = torch.randn(batch, num_samples, generator=generator) * 0.1
            started = time.process_time()
            loss = loss_of(module, transform(audio))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i:  # the first step warms the allocator up
                times.append(time.process_time() - started)
        return min(times)

    torch.manual_seed(0)
    transform.train()
    pretrain_batch = int(recipe_settings(spec, flags, "pretrain")["batch_size"])
    finetune_batch = int(recipe_settings(spec, flags, "finetune")["batch_size"])
    mae = AudioMAEPlusPlus(**model_kw)
    pretrain_s = run(mae, pretrain_batch, lambda m, x: m(x)[0])
    classifier = AudioMAEClassifier(AudioMAEPlusPlus(**model_kw), num_classes=10)
    finetune_s = run(classifier, finetune_batch, lambda m, x: m(x).logsumexp(-1).mean())
    classifier.eval()
    transform.eval()
    with torch.no_grad():
        audio = torch.randn(64, num_samples, generator=generator) * 0.1
        started = time.process_time()
        classifier(transform(audio))
        embed_s = (time.process_time() - started) / 64
    return Rates(pretrain_s, finetune_s, embed_s)


LOOP_OVERHEAD = (
    1.4  # the emitted loop's CPU s per step over the bare step timed in-process
)


@dataclass
class Plan:
    """Step counts chosen from the budget (epochs of the emitted script's stages)."""

    pretrain_epochs: int
    pretrain_warmup: float
    pretrain_steps: int
    finetune_epochs: int
    finetune_warmup: float
    finetune_steps: int
    estimated_s: float
    notes: list[str] = field(default_factory=list)


def steps_per_epoch(items: int, batch: int) -> int:
    """As the emitted loop counts them: drop_last batches (one batch when the set is smaller)."""
    batch = max(1, min(batch, items))
    return max(1, items // batch)


def plan_steps(
    spec: dict[str, Any],
    flags: dict[str, dict[str, str]],
    rates: Rates,
    *,
    seconds_left: float,
    train_items: int,
    eval_items: int,
    threads: int,
    extra_runs: int = 0,
) -> Plan:
    """Half of the time left to pre-training, a quarter to each fine-tuning run.

    CPU seconds per step (one thread) times the loop's own cost (data loading, logging: 1.1-1.5x
    measured), over ``threads x 0.75`` (what two threads make of one step here), estimate wall
    seconds on an idle machine; a run's start, data loading and embeddings come first.
    """
    speed = max(1.0, threads * 0.75) / LOOP_OVERHEAD
    total_items = train_items + eval_items
    per_run = (
        10.0 + total_items * rates.embed_s_per_item / speed
    )  # start + data + one embedding
    pre, fine = recipe_settings(spec, flags, "pretrain"), recipe_settings(
        spec, flags, "finetune"
    )
    spe_p = steps_per_epoch(train_items, int(pre["batch_size"]))
    spe_f = steps_per_epoch(train_items, int(fine["batch_size"]))
    # the extra random-init seeds: a run each, with a one-epoch fine-tuning that is not reported
    extra = extra_runs * (
        per_run
        + (spe_f * rates.finetune_s + eval_items * rates.embed_s_per_item) / speed
    )
    training = max(0.0, seconds_left - 2 * per_run - extra)
    notes = []
    pretrain_steps = 0.5 * training * speed / rates.pretrain_s
    pretrain_epochs = max(1, round(pretrain_steps / spe_p))
    epoch_s = (spe_f * rates.finetune_s + eval_items * rates.embed_s_per_item) / speed
    finetune_epochs = max(1, math.floor(0.25 * training / epoch_s))
    if pretrain_steps < spe_p or 0.25 * training < epoch_s:
        notes.append("the budget is below one epoch per stage: running one epoch each")

    def warmup(settings: dict[str, Any], epochs: int) -> float:
        # the spec's warm-up share of its own epochs, applied to the chosen epochs
        share = float(settings.get("warmup_epochs", 0.0)) / max(
            1, int(settings.get("epochs", 1))
        )
        return round(share * epochs, 3)

    estimated = (
        2 * per_run
        + extra
        + pretrain_epochs * spe_p * rates.pretrain_s / speed
        + 2 * finetune_epochs * epoch_s
    )
    return Plan(
        pretrain_epochs,
        warmup(pre, pretrain_epochs),
        pretrain_epochs * spe_p,
        finetune_epochs,
        warmup(fine, finetune_epochs),
        finetune_epochs * spe_f,
        round(estimated, 1),
        notes,
    )


# ---------------------------------------------------------------------------------------------
# The bench's own baseline: mean-pooled log-mel + logistic regression
# ---------------------------------------------------------------------------------------------


def logmel_features(
    data_dir: Path,
    clips: list[Clip],
    spec: dict[str, Any],
    flags: dict[str, dict[str, str]],
):
    """``[N, n_mels]``: the catalog's ``LogMel`` (the spec's settings) over each whole clip, mean over time."""
    import torch

    from components.transforms.spectral import LogMel

    settings = section_settings(spec, flags, "transform")
    settings["target_frames"] = None  # every frame of the clip: no crop, no tiling
    transform = LogMel(**settings).eval()
    rows = []
    with torch.no_grad():
        for clip in clips:
            features = transform(
                read_wav(data_dir / clip.path).unsqueeze(0)
            )  # [1, 1, T, F]
            rows.append(features[0, 0].mean(dim=0))
    return torch.stack(rows)


def logistic_regression(
    train_x, train_y, eval_x, eval_y, num_classes: int, l2: float = 1e-3
) -> float:
    """Accuracy of a multinomial logistic regression (standardised inputs, L2, full-batch L-BFGS)."""
    import torch

    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    x, q = (train_x - mean) / std, (eval_x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=500,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = (
            torch.nn.functional.cross_entropy(x @ weight + bias, train_y)
            + l2 * weight.square().sum()
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((q @ weight + bias).argmax(dim=-1) == eval_y).float().mean())


def knn_accuracy(
    train_x, train_y, eval_x, eval_y, num_classes: int, k: int = 20
) -> float:
    """The catalog's weighted cosine k-NN (what the script's ``knn`` step runs)."""
    from components.recipes.probe import knn_predict

    scores = knn_predict(train_x, train_y, eval_x, num_classes, k=k)
    return float((scores.argmax(dim=-1) == eval_y).float().mean())


# ---------------------------------------------------------------------------------------------
# Driving the emitted script
# ---------------------------------------------------------------------------------------------


def build_script(work: Path) -> Path:
    """``sigmae-gen build bench/learn_words.yaml`` into ``work/build``; the emitted script's path."""
    cli = Path(sys.executable).with_name("sigmae-gen")
    command = [str(cli)] if cli.is_file() else [sys.executable, "-m", "generator.cli"]
    subprocess.run(
        command + ["build", str(SPEC), "-o", str(work / "build")],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return work / "build" / "learn_words" / "learn_words.py"


def flag_args(flags: dict[str, dict[str, str]]) -> list[str]:
    out: list[str] = []
    for section, values in flags.items():
        for name, value in values.items():
            out += [f"--{section}.{name}"] + (
                value.replace(",", " ").split() or [value]
            )
    return out


@dataclass
class Arm:
    """One run of the emitted script (all four steps) and what its summaries say."""

    name: str
    argv: list[str]
    returncode: int
    wall_s: float
    summary: dict[str, Any]
    log_tail: str
    out_dir: str
    notes: list[str] = field(default_factory=list)
    reused: bool = False

    def step(self, section: str) -> dict[str, Any]:
        return (self.summary.get("steps") or {}).get(section) or {}


def run_script(
    script: Path, argv: list[str], out_dir: Path, threads: int, log: Path
) -> tuple[int, float]:
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
    )
    started = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.run(
            [sys.executable, str(script), *argv, "--out-dir", str(out_dir)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=out_dir.parent,
        )
    return process.returncode, time.perf_counter() - started


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def run_arm(
    name: str,
    script: Path,
    argv: list[str],
    work: Path,
    threads: int,
    fallback: list[str] | None = None,
    verbose: bool = True,
) -> Arm:
    """Run the script once (reusing an earlier identical run in ``work``); ``fallback``: argv if it fails."""
    key = hashlib.sha256(
        ("\0".join(argv) + "\0" + script.read_text()).encode()
    ).hexdigest()[:16]
    out_dir = work / "runs" / f"{name}-{key}"
    summary_path, log = out_dir / "summary.json", work / "runs" / f"{name}-{key}.log"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if summary_path.is_file():
        return Arm(
            name,
            argv,
            0,
            0.0,
            json.loads(summary_path.read_text()),
            tail(log),
            str(out_dir),
            reused=True,
        )
    if verbose:
        print(f"[learn] {name}: {script.name} {' '.join(argv)}", flush=True)
    code, wall = run_script(script, argv, out_dir, threads, log)
    if code != 0 and fallback is not None:
        why = tail(log, 3)
        arm = run_arm(name, script, fallback, work, threads, None, verbose)
        arm.notes.append(
            f"{' '.join(argv[-2:])} failed (exit {code}: {why.splitlines()[-1] if why else '?'}); ran the fallback"
        )
        return arm
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if code != 0 and verbose:
        print(f"[learn] {name} failed (exit {code}):\n{tail(log)}", flush=True)
    return Arm(name, argv, code, wall, summary, tail(log), str(out_dir))


def arm_embeddings(arm: Arm):
    """The embeddings the arm's probe computed (its embedding cache): ``(x, labels, folds)`` or None."""
    import torch

    files = sorted((Path(arm.out_dir) / "embedding_cache").glob("*.pt"))
    if not files:
        return None
    payload = torch.load(files[-1], map_location="cpu", weights_only=True)
    return payload["embeddings"], payload["labels"], payload["folds"]


def loss_curve(arm: Arm, section: str = "pretrain") -> list[tuple[int, float]]:
    path = Path(arm.out_dir) / "metrics.jsonl"
    curve = []
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if (
                row.get("section") == section
                and row.get("kind") == "train"
                and "loss" in row
            ):
                curve.append((int(row["step"]), float(row["loss"])))
    return curve


def plot_curve(curve: list[tuple[int, float]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([s for s, _ in curve], [v for _, v in curve])
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("masked reconstruction loss")
    axis.set_title("MAE pre-training on spoken words")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def sample_curve(
    curve: list[tuple[int, float]], points: int = 10
) -> list[tuple[int, float]]:
    """About ``points`` (step, loss) pairs, evenly spaced, each the mean of its stretch (noise)."""
    if not curve:
        return []
    size = max(1, math.ceil(len(curve) / points))
    return [
        (chunk[-1][0], round(sum(v for _, v in chunk) / len(chunk), 4))
        for chunk in (curve[i : i + size] for i in range(0, len(curve), size))
    ]


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

COLUMNS = (
    ("probe", "linear probe (script)"),
    ("logreg", "logistic regression (bench)"),
    ("knn", "k-NN (script)"),
    ("finetune", "fine-tune (script)"),
)


def percent(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: one row per feature source, accuracies in % on the held-out voices."""
    header = ["features / encoder"] + [title for _, title in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
    for row in rows:
        cells = [row["name"]] + [percent(row.get(key)) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_checks(rows: dict[str, dict[str, Any]]) -> list[tuple[str, bool | None]]:
    """The issue's goal, claim by claim (None: a number is missing)."""

    def above(a: float | None, b: float | None) -> bool | None:
        return None if a is None or b is None else a > b

    mae, random, logmel = rows["mae"], rows["random"], rows["logmel"]
    return [
        (
            "MAE encoder beats random-init on the linear probe",
            above(mae.get("probe"), random.get("probe")),
        ),
        (
            "MAE encoder beats random-init on k-NN",
            above(mae.get("knn"), random.get("knn")),
        ),
        (
            "fine-tuning from MAE beats fine-tuning from scratch",
            above(mae.get("finetune"), random.get("finetune")),
        ),
        (
            "fine-tuning from MAE beats the log-mel probe",
            above(mae.get("finetune"), logmel.get("logreg")),
        ),
    ]


def init_spread(
    random_row: dict[str, Any], seed_rows: list[dict[str, Any]], seed: int = 0
) -> dict[str, Any] | None:
    """Min and max of the random-init probe, logistic regression and k-NN over the seeds run."""
    if not seed_rows:
        return None
    every = [random_row] + seed_rows
    out: dict[str, Any] = {
        "seeds": [seed] + [r["seed"] for r in seed_rows],
        "range": {},
    }
    for key, name in (
        ("probe", "probe"),
        ("logreg", "logistic regression"),
        ("knn", "k-NN"),
    ):
        values = [r[key] for r in every if r.get(key) is not None]
        if values:
            out["range"][name] = (min(values), max(values))
    return out


def encoder_row(
    name: str, arm: Arm, train_folds: list[int], eval_folds: list[int], num_classes: int
) -> dict[str, Any]:
    import torch

    row: dict[str, Any] = {"name": name}
    row["probe"] = arm.step("probe").get("accuracy")
    row["knn"] = arm.step("knn").get("accuracy")
    row["finetune"] = arm.step("finetune").get("accuracy")
    row["finetune_best"] = arm.step("finetune").get("best_accuracy")
    found = arm_embeddings(arm)
    if found is not None:
        x, y, folds = found
        train = torch.isin(folds, torch.tensor(train_folds))
        held = torch.isin(folds, torch.tensor(eval_folds))
        row["logreg"] = logistic_regression(
            x[train], y[train], x[held], y[held], num_classes
        )
        row["embedding_spread"] = float(x[train].std(dim=0).mean())
    return row


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="wall-time budget of the whole bench (default 10)",
    )
    parser.add_argument(
        "--words",
        type=int,
        default=12,
        help=f"how many words (classes), at most {len(WORDS)}",
    )
    parser.add_argument(
        "--voices",
        type=int,
        default=12,
        help=f"how many voices (speakers), at most {len(VOICES)}",
    )
    parser.add_argument(
        "--eval-voices",
        type=int,
        default=4,
        help="voices held out for evaluation (default 4)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="torch threads of the script",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init-seeds",
        type=int,
        default=2,
        metavar="K",
        help="extra random-init runs (seeds seed+1..seed+K) whose probe and k-NN show how much "
        "the initialisation alone moves them (default 2; 0 = off)",
    )
    parser.add_argument(
        "--flag",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="a flag for the emitted script (both runs; pretrain.* only reaches the MAE run)",
    )
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        help="fix the pre-training epochs instead of planning them",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        help="fix the fine-tuning epochs instead of planning them",
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="data, build and runs (default: a temporary folder, removed "
        "unless --keep); an existing one is reused: same clips, same finished runs",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary work folder"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/learn"),
        help="results: learn_results.json, table.md, pretrain_loss.png (default runs/learn)",
    )
    parser.add_argument("--json", type=Path, help="also write the results JSON here")
    args = parser.parse_args(argv)
    if not 2 <= args.words <= len(WORDS):
        parser.error(f"--words must be 2..{len(WORDS)}")
    if not 2 <= args.voices <= len(VOICES):
        parser.error(f"--voices must be 2..{len(VOICES)}")
    if not 1 <= args.eval_voices < args.voices:
        parser.error("--eval-voices must be at least 1 and below --voices")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = tool_missing()
    if missing:
        print(
            f"error: {missing} is not installed (Debian: apt-get install espeak-ng sox)",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    budget = args.minutes * 60
    temporary = args.work is None
    work = (
        Path(tempfile.mkdtemp(prefix="sigmae-learn-"))
        if temporary
        else args.work.resolve()
    )
    work.mkdir(parents=True, exist_ok=True)
    try:
        return bench(args, work, started, budget)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif temporary:
            print(f"[learn] work folder kept: {work}")


def bench(args: argparse.Namespace, work: Path, started: float, budget: float) -> int:
    import torch

    torch.manual_seed(args.seed)
    spec = load_spec()
    flags = parse_flags(args.flag)
    words, voices = list(WORDS[: args.words]), list(VOICES[: args.voices])
    data_dir = work / "data"
    clips, synth_s = make_dataset(data_dir, words, voices, workers=args.threads)
    train_folds, eval_folds = split_voices(len(voices), args.eval_voices)
    train_clips = [c for c in clips if c.fold in train_folds]
    eval_clips = [c for c in clips if c.fold in eval_folds]
    print(
        f"[learn] {len(clips)} clips: {len(words)} words x {len(voices)} voices x {len(SPEEDS)} speeds x "
        f"{len(PITCHES)} pitches ({'synthesised in %.0f s' % synth_s if synth_s else 'reused'}); "
        f"train voices {train_folds}, held-out voices {eval_folds}",
        flush=True,
    )

    # the bench's own baseline
    labels = torch.tensor([words.index(c.word) for c in clips])
    folds = torch.tensor([c.fold for c in clips])
    features = logmel_features(data_dir, clips, spec, flags)
    train, held = torch.isin(folds, torch.tensor(train_folds)), torch.isin(
        folds, torch.tensor(eval_folds)
    )
    mean, std = features[train].mean(dim=0), features[train].std(dim=0).clamp_min(1e-6)
    standardised = (features - mean) / std
    logmel_row = {
        "name": f"log-mel mean over time ({features.shape[1]}-d)",
        "logreg": logistic_regression(
            features[train], labels[train], features[held], labels[held], len(words)
        ),
        "knn": knn_accuracy(
            standardised[train],
            labels[train],
            standardised[held],
            labels[held],
            len(words),
        ),
    }

    script = build_script(work)
    threads = max(1, args.threads)
    rates = time_steps(spec, flags)
    plan = plan_steps(
        spec,
        flags,
        rates,
        seconds_left=budget - (time.perf_counter() - started),
        train_items=len(train_clips),
        eval_items=len(eval_clips),
        threads=threads,
        extra_runs=args.init_seeds,
    )
    pre, fine = recipe_settings(spec, flags, "pretrain"), recipe_settings(
        spec, flags, "finetune"
    )
    if args.pretrain_epochs is not None:
        plan.pretrain_epochs = args.pretrain_epochs
        plan.pretrain_steps = args.pretrain_epochs * steps_per_epoch(
            len(train_clips), int(pre["batch_size"])
        )
        share = float(pre.get("warmup_epochs", 0)) / max(1, int(pre.get("epochs", 1)))
        plan.pretrain_warmup = round(share * args.pretrain_epochs, 3)
    if args.finetune_epochs is not None:
        plan.finetune_epochs = args.finetune_epochs
        plan.finetune_steps = args.finetune_epochs * steps_per_epoch(
            len(train_clips), int(fine["batch_size"])
        )
        share = float(fine.get("warmup_epochs", 0)) / max(1, int(fine.get("epochs", 1)))
        plan.finetune_warmup = round(share * args.finetune_epochs, 3)
    print(
        f"[learn] plan: pre-training {plan.pretrain_epochs} epochs ({plan.pretrain_steps} steps, "
        f"{rates.pretrain_s:.3f} CPU s/step), fine-tuning {plan.finetune_epochs} epochs ({plan.finetune_steps} "
        f"steps, {rates.finetune_s:.3f} CPU s/step) per run; estimated {plan.estimated_s:.0f} s of runs"
        + "".join(f"; {note}" for note in plan.notes),
        flush=True,
    )

    folds_arg = lambda section: [
        f"--{section}.train_folds",
        *map(str, train_folds),  # noqa: E731
        f"--{section}.eval_folds",
        *map(str, eval_folds),
    ]
    shared_flags = {s: v for s, v in flags.items() if s != "pretrain"}
    common = [
        "--data-dir",
        str(data_dir),
        "--seed",
        str(args.seed),
        "--device",
        "cpu",
        *folds_arg("probe"),
        *folds_arg("knn"),
        *folds_arg("finetune"),
        "--finetune.epochs",
        str(plan.finetune_epochs),
        "--finetune.warmup_epochs",
        str(plan.finetune_warmup),
        *flag_args(shared_flags),
    ]
    pretrain_common = ["--pretrain.train_folds", *map(str, train_folds)]
    random_arm = run_arm(
        "random",
        script,
        common + pretrain_common + ["--pretrain.epochs", "0"],
        work,
        threads,
        fallback=common
        + pretrain_common
        + ["--pretrain.epochs", "1", "--pretrain.lr", "1e-12"],
    )
    mae_arm = run_arm(
        "mae",
        script,
        common
        + pretrain_common
        + [
            "--pretrain.epochs",
            str(plan.pretrain_epochs),
            "--pretrain.warmup_epochs",
            str(plan.pretrain_warmup),
            *flag_args({"pretrain": flags.get("pretrain", {})}),
        ],
        work,
        threads,
    )

    seed_rows = []
    for extra in range(1, args.init_seeds + 1):
        seed = args.seed + extra
        arm = run_arm(
            f"random-seed{seed}",
            script,
            common
            + pretrain_common
            + ["--pretrain.epochs", "0", "--seed", str(seed), "--finetune.epochs", "1"],
            work,
            threads,
        )
        seed_rows.append(
            {
                "seed": seed,
                **encoder_row(
                    f"random-init, seed {seed}",
                    arm,
                    train_folds,
                    eval_folds,
                    len(words),
                ),
            }
        )
        seed_rows[-1].pop("finetune", None)  # one epoch: a by-product, not a result
        seed_rows[-1].pop("finetune_best", None)

    rows = {
        "logmel": logmel_row,
        "random": encoder_row(
            "random-init encoder (fine-tune: from scratch)",
            random_arm,
            train_folds,
            eval_folds,
            len(words),
        ),
        "mae": encoder_row(
            "MAE-pretrained encoder (fine-tune: from MAE)",
            mae_arm,
            train_folds,
            eval_folds,
            len(words),
        ),
    }
    table = format_table(list(rows.values()))
    curve = loss_curve(mae_arm)
    checks = goal_checks(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "pretrain_loss.png"
    plotted = bool(curve) and plot_curve(curve, png)
    wall = time.perf_counter() - started

    print()
    print(
        f"Spoken words, speaker-disjoint: {len(train_clips)} train clips ({len(train_folds)} voices), "
        f"{len(eval_clips)} held-out clips ({len(eval_folds)} voices), {len(words)} classes "
        f"(chance {100 / len(words):.1f} %); accuracy in % on the held-out voices"
    )
    print(table)
    print(
        f"pre-training: {mae_arm.step('pretrain').get('steps')} steps; fine-tuning: "
        f"{mae_arm.step('finetune').get('steps')} steps from MAE, {random_arm.step('finetune').get('steps')} "
        f"from scratch; wall {wall:.0f} s (budget {budget:.0f} s)"
    )
    shown = sample_curve(curve)
    print(
        "pre-training loss (step: loss): "
        + ", ".join(f"{s}: {v:.3f}" for s, v in shown)
        + (f"  [{png}]" if plotted else "  (pip install matplotlib for a PNG)")
    )
    spread = init_spread(rows["random"], seed_rows, args.seed)
    if spread:
        print(
            "random-init encoder over seeds "
            + ", ".join(str(s) for s in spread["seeds"])
            + ": "
            + "; ".join(
                f"{name} {percent(low)}-{percent(high)}"
                for name, (low, high) in spread["range"].items()
            )
            + " (differences inside these ranges are the initialisation's, not pre-training's)"
        )
    inside = {}
    if spread:
        for key, name in (("probe", "probe"), ("knn", "k-NN")):
            low, high = spread["range"].get(name, (None, None))
            value = rows["mae"].get(key)
            if value is not None and low is not None:
                inside[key] = low <= value <= high
    for claim, ok in checks:
        key = "probe" if "linear probe" in claim else "knn" if "k-NN" in claim else None
        caveat = (
            " (but inside the random-init seed range)" if ok and inside.get(key) else ""
        )
        print(
            f"  {'yes' if ok else 'NO ' if ok is not None else ' ? '}  {claim}{caveat}"
        )
    for arm in (random_arm, mae_arm):
        for note in arm.notes:
            print(f"note ({arm.name}): {note}")
        if arm.returncode != 0:
            print(
                f"warning: the {arm.name} run failed (exit {arm.returncode}); its log ends:\n{arm.log_tail}"
            )

    results = {
        "format": "sigmae-learn/1",
        "words": words,
        "voices": voices,
        "train_voices": train_folds,
        "eval_voices": eval_folds,
        "num_clips": {"train": len(train_clips), "eval": len(eval_clips)},
        "flags": args.flag,
        "seed": args.seed,
        "minutes": args.minutes,
        "wall_s": round(wall, 1),
        "synthesis_s": round(synth_s, 1),
        "rates_cpu_s_per_step": vars(rates),
        "plan": vars(plan),
        "rows": rows,
        "init_seeds": seed_rows,
        "init_spread": spread,
        "goal": [{"claim": claim, "holds": ok} for claim, ok in checks],
        "pretrain_loss_curve": curve,
        "runs": {
            arm.name: {
                "argv": arm.argv,
                "returncode": arm.returncode,
                "wall_s": round(arm.wall_s, 1),
                "reused": arm.reused,
                "notes": arm.notes,
                "steps": {
                    k: {kk: vv for kk, vv in v.items() if kk != "confusion_matrix"}
                    for k, v in (arm.summary.get("steps") or {}).items()
                },
            }
            for arm in (random_arm, mae_arm)
        },
        "table": table,
    }
    text = json.dumps(results, indent=2, default=str)
    (args.out / "learn_results.json").write_text(text)
    (args.out / "table.md").write_text(table + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(f"results: {args.out / 'learn_results.json'}")
    return 0 if random_arm.returncode == 0 and mae_arm.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
