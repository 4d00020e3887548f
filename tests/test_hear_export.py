"""HEAR 2021 export (issue 12 item 3): ``--embed.hear_module`` of an emitted script writes a module
that serves the encoder through the HEAR API, checked the way the HEAR validator checks one.

specs/folder_audio.yaml is built and run with ``--smoke`` (AudioMAE++ tiny, 2 blocks, 48x80 input,
patch 4x16: a 12x5 grid, so timestamp embeddings are 5 x 192 = 960 wide, one per 4 frames = 40 ms).
The written module is imported in a separate ``python -I`` process in which importing the catalog,
the generator or the emitted script raises, and every fact the tests check is measured there once.
The real ``hearvalidator`` runs too when it is importable by this interpreter or by the one
``SIGMAE_HEAR_PYTHON`` names (it needs TensorFlow, so it is not a dev dependency).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from components.models import AudioMAEPlusPlus
from components.models.official_weights import export_official_state_dict
from generator.build import build_spec, load_index
from test_shipped_specs import clean_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "folder_audio.yaml"
NAME = SPEC.stem
MODULE = f"hear_{NAME}"
SAMPLE_RATE, HOP, N_FFT, TOKEN_FRAMES, WINDOW_FRAMES = 16000, 160, 400, 4, 48
# share_ffn2_norm: the official AudioMAE++ wiring, so the trained weights have an official layout too
SMOKE_MODEL = dict(preset="tiny", img_size=(48, 80), patch_size=(4, 16), depth=2, decoder_depth=1, share_ffn2_norm=True)
DIM = 5 * 192
SECONDS = (0.0, 0.005, 0.1, 0.3, 1.0, 2.0, 2.5, 3.74, 60.0)  # 0.3 s: 31 frames, under one 48-frame window

CHECKER = r'''
import ast, importlib, importlib.abc, json, sys

embed_dir, name, weights, official = sys.argv[1:5]
BLOCKED = {"components", "generator", "folder_audio"}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ImportError(f"the HEAR module imported {fullname}")
        return None


sys.meta_path.insert(0, Block())
sys.path.insert(0, embed_dir)
import torch

facts = {}
module = importlib.import_module(name)
tree = ast.parse(open(module.__file__).read())
# module-level imports (optional packages, e.g. matplotlib for plots, are imported inside functions)
imported = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
imported |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module and not n.level}
facts["foreign_imports"] = sorted(imported - set(sys.stdlib_module_names) - {"torch"})
facts["functions"] = [f for f in ("load_model", "get_scene_embeddings", "get_timestamp_embeddings") if callable(getattr(module, f, None))]
model = module.load_model(weights)
facts["is_torch_module"] = isinstance(model, torch.nn.Module)
facts["attributes"] = {k: [type(getattr(model, k, None)).__name__, getattr(model, k, None)]
                       for k in ("sample_rate", "scene_embedding_size", "timestamp_embedding_size")}
sr = model.sample_rate
gen = torch.Generator().manual_seed(0)


def noise(n, samples):
    return torch.rand(n, samples, generator=gen) * 2 - 1


audio = noise(4, 2 * sr)
emb, ts = module.get_timestamp_embeddings(audio, model)
scene = module.get_scene_embeddings(audio, model)
facts["batch"] = {
    "emb_shape": list(emb.shape), "emb_dtype": str(emb.dtype), "ts_shape": list(ts.shape), "ts_dtype": str(ts.dtype),
    "scene_shape": list(scene.shape), "scene_dtype": str(scene.dtype),
    "finite": bool(torch.isfinite(emb).all() and torch.isfinite(scene).all()),
    "scene_minus_mean": float((scene - emb.mean(dim=1)).abs().max()),
    "rows_share_timestamps": bool((ts == ts[:1]).all()),
    "distinct_sounds_differ": float((scene[0] - scene[1]).abs().max()),
}
alone = [module.get_timestamp_embeddings(audio[i:i + 1], model) for i in range(4)]
order = torch.tensor([2, 0, 3, 1])
shuffled = module.get_scene_embeddings(audio[order], model)
facts["independence"] = {
    "timestamp_alone_vs_batch": max(float((a[0][0] - emb[i]).abs().max()) for i, a in enumerate(alone)),
    "scene_alone_vs_batch": max(float((module.get_scene_embeddings(audio[i:i + 1], model)[0] - scene[i]).abs().max()) for i in range(4)),
    "scene_shuffled_vs_batch": float((shuffled - scene[order]).abs().max()),
    "scale": float(scene.abs().max()),
}
again = module.get_scene_embeddings(audio, model)
facts["deterministic"] = float((again - scene).abs().max())

lengths = {}
for seconds in json.loads(sys.argv[5]):
    clip = noise(2, int(seconds * sr))
    e, t = module.get_timestamp_embeddings(clip, model)
    s = module.get_scene_embeddings(clip, model)
    d = torch.diff(t.double(), dim=1)
    lengths[str(clip.shape[1])] = {
        "emb_shape": list(e.shape), "ts_shape": list(t.shape), "scene_shape": list(s.shape),
        "dtypes": [str(e.dtype), str(s.dtype)],
        "finite": bool(torch.isfinite(e).all() and torch.isfinite(s).all() and torch.isfinite(t).all()),
        "first": float(t[0, 0]), "last": float(t[0, -1]),
        "min_step": float(d.min()) if d.numel() else None,
        "step_deviation": float((d - d.mean()).abs().max()) if d.numel() else 0.0,
    }
facts["lengths"] = lengths

state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
loaded = model.model.state_dict()
facts["weights_max_diff"] = max(float((loaded[k] - state[k]).abs().max()) for k in loaded)
facts["weights_compared"] = len(loaded)
default = module.load_model()
facts["default_weights_diff"] = float((module.get_scene_embeddings(audio, default) - scene).abs().max())
if official:
    facts["official_diff"] = float((module.get_scene_embeddings(audio, module.load_model(official)) - scene).abs().max())
print("FACTS " + json.dumps(facts))
'''


def run_script(script: Path, cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(script), "--smoke", "--model.share_ffn2_norm", "true", *flags], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build, run without the option, then ``--resume --embed.hear_module true``; measure the module."""
    work = tmp_path_factory.mktemp("hear")
    build_spec(SPEC, work / "build", index=load_index())
    script = work / "build" / NAME / f"{NAME}.py"
    out = work / "run"
    first = run_script(script, work, "--out-dir", str(out))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    without = sorted(p.name for p in (out / "embed").iterdir())
    summary_without = json.loads((out / "summary.json").read_text())["steps"]["embed"]
    second = run_script(script, work, "--out-dir", str(out), "--resume", "--embed.hear_module", "true")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())["steps"]["embed"]
    module_path = Path(summary["hear_module"])
    weights = Path(summary["checkpoint"])
    # the same weights in the official AudioMAE++ layout, as its training code saves them
    model = AudioMAEPlusPlus(**SMOKE_MODEL)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["model"])
    official = work / "official.pth"
    torch.save({"model": export_official_state_dict(model), "epoch": 1}, official)
    checker = subprocess.run(
        [sys.executable, "-I", "-c", CHECKER, str(module_path.parent), module_path.stem, str(weights), str(official),
         json.dumps(SECONDS)],
        cwd=work, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert checker.returncode == 0, checker.stdout[-3000:] + checker.stderr[-3000:]
    facts = json.loads(checker.stdout.split("FACTS ", 1)[1])
    return {"facts": facts, "module": module_path, "weights": weights, "without": without,
            "summary_without": summary_without, "summary": summary, "work": work}


def test_the_option_is_off_by_default_and_writes_the_module_beside_the_embeddings(export: dict) -> None:
    assert export["without"] == ["embeddings.pt", "summary.json"] and export["summary_without"]["hear_module"] is None
    assert export["module"] == export["module"].parent.parent / "embed" / f"{MODULE}.py" and export["module"].is_file()
    assert export["summary"]["hear_module"] == str(export["module"])
    text = export["module"].read_text()
    assert text.startswith(f"# HEAR 2021 API module {MODULE} (standalone")
    assert f"HEAR_WEIGHTS = {str(export['weights'].resolve())!r}" in text


def test_the_module_is_standalone_stdlib_and_torch_only(export: dict) -> None:
    # the checker imported it with the catalog, the generator and the script made unimportable
    assert export["facts"]["foreign_imports"] == []


def test_the_api_functions_and_model_attributes(export: dict) -> None:
    facts = export["facts"]
    assert facts["functions"] == ["load_model", "get_scene_embeddings", "get_timestamp_embeddings"]
    assert facts["is_torch_module"]
    assert facts["attributes"] == {"sample_rate": ["int", SAMPLE_RATE], "scene_embedding_size": ["int", DIM],
                                   "timestamp_embedding_size": ["int", DIM]}


def expected_tokens(samples: int) -> int:
    frames = 1 + max(samples, N_FFT // 2 + 1) // HOP  # shorter clips are padded to one STFT frame
    return math.ceil(frames / TOKEN_FRAMES)


def test_shapes_and_dtypes_of_a_batch(export: dict) -> None:
    batch = export["facts"]["batch"]
    tokens = expected_tokens(2 * SAMPLE_RATE)
    assert batch["emb_shape"] == [4, tokens, DIM] and batch["ts_shape"] == [4, tokens]
    assert batch["scene_shape"] == [4, DIM]
    assert batch["emb_dtype"] == batch["scene_dtype"] == batch["ts_dtype"] == "torch.float32"
    assert batch["finite"] and batch["rows_share_timestamps"]
    assert batch["distinct_sounds_differ"] > 1e-4


def test_the_scene_embedding_is_the_mean_of_the_timestamp_embeddings(export: dict) -> None:
    assert export["facts"]["batch"]["scene_minus_mean"] < 1e-5


def test_batch_independence_and_determinism(export: dict) -> None:
    independence = export["facts"]["independence"]
    tolerance = 1e-4 * max(1.0, independence["scale"])
    assert independence["timestamp_alone_vs_batch"] < tolerance
    assert independence["scene_alone_vs_batch"] < tolerance
    assert independence["scene_shuffled_vs_batch"] < tolerance
    assert export["facts"]["deterministic"] == 0.0


@pytest.mark.parametrize("seconds", SECONDS)
def test_lengths_from_empty_to_a_minute(export: dict, seconds: float) -> None:
    samples = int(seconds * SAMPLE_RATE)
    got = export["facts"]["lengths"][str(samples)]
    tokens = expected_tokens(samples)
    assert got["emb_shape"] == [2, tokens, DIM] and got["ts_shape"] == [2, tokens] and got["scene_shape"] == [2, DIM]
    assert got["dtypes"] == ["torch.float32", "torch.float32"] and got["finite"]
    duration_ms = 1000.0 * samples / SAMPLE_RATE
    step = duration_ms / tokens  # token i's share of the clip; HEAR stamps its centre, (i + 0.5) * step
    assert got["first"] == pytest.approx(step / 2, abs=1e-3)
    # float32 stamps: a minute's are rounded to a few thousandths of a millisecond
    assert got["last"] == pytest.approx((tokens - 0.5) * step, rel=torch.finfo(torch.float32).eps, abs=1e-3)
    if tokens > 1:
        assert got["min_step"] > 0  # strictly increasing
        # regular: hearvalidator demands 1e-3 ms (on 2 s clips); float32 stamps of long clips round
        assert got["step_deviation"] < 1e-3 + 4 * torch.finfo(torch.float32).eps * got["last"]
        assert got["last"] < duration_ms
        assert step <= 50.0  # HEAR's suggested hop
        if seconds >= 1.0:  # a token is 4 frames: 40 ms (short clips: the duration spread over the tokens)
            assert step == pytest.approx(TOKEN_FRAMES * HOP / SAMPLE_RATE * 1000, rel=0.05)


def test_load_model_loads_the_checkpoint_and_official_releases(export: dict) -> None:
    facts = export["facts"]
    assert facts["weights_compared"] > 10 and facts["weights_max_diff"] == 0.0
    assert facts["default_weights_diff"] == 0.0
    assert facts["official_diff"] < 1e-5  # the same weights in the official AudioMAE++ layout


def _validator_python() -> str | None:
    for candidate in (os.environ.get("SIGMAE_HEAR_PYTHON"), sys.executable):
        if candidate and subprocess.run([candidate, "-c", "import hearvalidator.validate"],
                                        capture_output=True, timeout=300).returncode == 0:
            return candidate
    return None


def test_the_real_hear_validator_accepts_the_module(export: dict) -> None:
    python = _validator_python()
    if python is None:
        pytest.skip("hearvalidator (needs TensorFlow) is not installed; set SIGMAE_HEAR_PYTHON to a Python that has it")
    # the module (torch) is imported before the validator imports TensorFlow: the other order
    # crashes inside triton with TensorFlow 2.21 and torch 2.14 in one process
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import importlib; importlib.import_module(sys.argv[2]); "
            "from hearvalidator.validate import main; "
            "sys.argv = ['hear-validator', sys.argv[2], '-m', sys.argv[3], '-d', 'cpu']; main()")
    completed = subprocess.run([python, "-I", "-c", code, str(export["module"].parent), MODULE, str(export["weights"])],
                               cwd=export["work"], env=clean_env(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "Looks good!" in completed.stdout


def test_audiomae_with_kaldi_fbanks_from_the_catalog(tmp_path: Path) -> None:
    """AudioMAE at its window (16-frame tokens: 160 ms, 8 x 192 wide), written from the catalog
    (a module that imports the catalog: the standalone one needs an emitted script)."""
    import importlib

    from components.run_checkpoint import CHECKPOINT_FORMAT
    from components.models import AudioMAE
    from components.recipes.hear import write_hear_module
    from components.transforms import KaldiFbank

    model_config = dict(preset="tiny", img_size=(64, 128), depth=2, decoder_depth=1)
    transform_config = dict(sample_rate=16000, num_mel_bins=128, target_frames=64)
    torch.manual_seed(3)
    weights = tmp_path / "ckpt.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": AudioMAE(**model_config).state_dict()}, weights)
    path = write_hear_module(tmp_path / "hear_catalog_mae.py", weights=weights, model_class=AudioMAE,
                             model_config=model_config, transform_class=KaldiFbank, transform_config=transform_config)
    assert path.read_text().startswith("# HEAR 2021 API module hear_catalog_mae (imports the sigmae-gen catalog")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("hear_catalog_mae")
    finally:
        sys.path.remove(str(tmp_path))
    model = module.load_model()
    assert (model.sample_rate, model.scene_embedding_size, model.timestamp_embedding_size) == (16000, 8 * 192, 8 * 192)
    for samples in (0, 399, 16000, 5 * 16000 + 37):
        audio = torch.rand(3, samples, generator=torch.Generator().manual_seed(samples)) * 2 - 1
        emb, ts = module.get_timestamp_embeddings(audio, model)
        frames = 1 + (max(samples, 400) - 400) // 160  # Kaldi's whole 25 ms frames; shorter clips padded to one
        tokens = math.ceil(frames / 16)
        assert emb.shape == (3, tokens, 8 * 192) and ts.shape == (3, tokens) and emb.dtype == torch.float32
        assert torch.isfinite(emb).all()
        assert torch.allclose(ts[0], (torch.arange(tokens) + 0.5) * (1000.0 * samples / 16000 / tokens))
        scene = module.get_scene_embeddings(audio, model)
        assert torch.allclose(scene, emb.mean(dim=1)) and scene.shape == (3, 8 * 192)
        alone = module.get_scene_embeddings(audio[1:2], model)
        assert torch.allclose(alone[0], scene[1], atol=1e-4)
    assert tokens == 32 and float(ts[0, 1] - ts[0, 0]) == pytest.approx(160.0, rel=0.05)  # the 5 s clip
    assert float(ts[0, 0]) == pytest.approx(float(ts[0, 1] - ts[0, 0]) / 2)  # the first token's centre
