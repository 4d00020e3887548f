"""Generator numbers: stage times cold/warm, scaling with unrelated modules, tree shaking, builds.

    .venv/bin/python bench/generator.py            # everything, median of 5
    .venv/bin/python bench/generator.py --runs 3   # quicker
    .venv/bin/python bench/generator.py --sections builds --specs esc50_audiomae.yaml --runs 5
                                                   # the goal figures only (issue 13 D.2)
    .venv/bin/python bench/generator.py --sections goals --against HEAD~1   # side by side

The builds section prints one line per shipped spec: its cold and warm build time in process
(build_spec's total, imports excluded) against the goals (cold <= 1.0 s, warm <= 0.1 s).

Every timed run is a fresh Python process, as a `sigmae-gen build` is: "cold" starts from an
empty cache folder, "warm" from the one the previous run filled. Catalog copies live in a
temporary folder; the repository is never written to, except the generator's own bytecode
(generator/__pycache__, gitignored), compiled first: an installed generator has it, and
without it (PYTHONDONTWRITEBYTECODE=1, an edited module) every run would time Python
compiling the generator's modules too.
"""

from __future__ import annotations

import argparse
import compileall
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESERVED = ("Config", "PIPELINE", "main", "RunOptions")
GOAL_SPEC = "esc50_audiomae.yaml"
COLD_GOAL, WARM_GOAL = 1.0, 0.1  # seconds, in-process (issue 13 D.2)
EDITED_MODULE = "components/runtime.py"  # read by every build: an edit to it is the catalog-editing loop


# --------------------------------------------------------------------------- worker (one process)


def bench_roots(index) -> list:
    """Every registered non-fixture component of the real catalog (never the generated extras)."""
    return [
        c.key
        for c in index.components.values()
        if c.kind != "fixture" and not c.module.startswith("components.unrelated")
    ]


def spec_like_roots(index) -> list:
    """What an ESC-50 AudioMAE++ spec needs: one data set, transform, model, every recipe, the runtime."""
    wanted = [("data", "esc50"), ("data", "synthetic_audio"), ("transform", "kaldi_fbank"), ("model", "audiomae++")]
    roots = [index.components[w].key for w in wanted if w in index.components]
    roots += [c.key for c in index.components_of("recipe")]
    if ("components.runtime", "run_pipeline") in index.definitions:
        roots.append(("components.runtime", "run_pipeline"))
    return roots


def worker_stages(catalog: Path, cache: Path) -> dict:
    """index + resolve + inline of every registered non-fixture component of ``catalog``."""
    sys.path.insert(0, str(REPO))
    start = time.perf_counter()
    from generator.index import build_index
    from generator.inline import inline
    from generator.resolve import resolve

    imported = time.perf_counter()
    index = build_index(catalog, cache_dir=cache)
    indexed = time.perf_counter()
    resolution = resolve(index, bench_roots(index))
    resolved = time.perf_counter()
    program = inline(index, resolution, reserved=RESERVED, cache_dir=cache)
    inlined = time.perf_counter()
    shaken = inline(index, resolve(index, spec_like_roots(index)), reserved=RESERVED, cache_dir=cache)
    emitted = sum(chunk.code.count("\n") for chunk in shaken.chunks) + len(shaken.imports)
    touched = sum(index.modules[chunk.module].lines for chunk in shaken.chunks)
    shaken_resolution = resolve(index, spec_like_roots(index))
    statements = {id(index.statements[key]): index.statements[key] for key in shaken_resolution.order}
    source_lines = sum(s.code.count("\n") for s in statements.values())
    return {
        "import": imported - start,
        "index": indexed - imported,
        "resolve": resolved - indexed,
        "inline": inlined - resolved,
        "stages": inlined - imported,
        "modules": len(index.modules),
        "catalog_lines": sum(m.lines for m in index.modules.values()),
        "emitted_lines": emitted,
        "emitted_source_lines": source_lines,
        "touched_lines": touched,
        "touched_modules": len(shaken.chunks),
        "all_components_lines": sum(chunk.code.count("\n") for chunk in program.chunks),
        "definitions": len(resolution.order),
        "excluded": resolution.excluded,
    }


def worker_build(spec: Path, catalog: Path, out: Path, generator_root: Path = REPO, variant: str = "as is") -> dict:
    """One build in this process; ``variant`` switches one of the generator's caches off."""
    sys.path.insert(0, str(generator_root))
    start = time.perf_counter()
    from generator.build import build_spec

    if variant == "no black cache":  # black's results kept in memory only, never on disk
        import generator.formatting as formatting
        from generator.cache import TextCache

        formatting._cache = lambda cache_dir: TextCache(None, "black")
    elif variant == "no index snapshot":  # every module parsed and analysed again
        import generator.index as index_module

        index_module.load_pickle = lambda path: None
    options = {"use_cache": False} if variant == "no compile cache" else {}  # resolve + inline every time
    cpu = time.process_time()
    result = build_spec(spec, out, catalog_root=catalog, **options)
    cpu = time.process_time() - cpu
    if variant == "repeat":  # a build in a process that has built before (an editor, a watcher)
        from generator.build import load_index

        index = load_index(catalog)
        for _ in range(3):
            result = build_spec(spec, out, index=index)
    timings = dict(result.timings)
    timings["cpu"] = cpu  # the first build's CPU time: what a busy machine inflates least
    timings["process_total"] = time.perf_counter() - start
    return timings


# --------------------------------------------------------------------------- orchestration


def run_worker(*args: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if done.returncode != 0:
        raise SystemExit(f"worker {' '.join(args)} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - started
    return result


CATALOG_SOURCE = REPO  # the folder whose components/ the benchmark copies (--catalog)


def copy_catalog(dest: Path) -> Path:
    shutil.copytree(CATALOG_SOURCE / "components", dest / "components", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


UNRELATED = '''"""Generated unrelated module {i}: indexed, never reached."""

from __future__ import annotations

import math

import torch
from torch import nn

from components.registry import model_registry

SCALE_{i} = {i}.5


def helper_{i}(x: torch.Tensor) -> torch.Tensor:
    """Scale and squash."""
    return torch.tanh(x * SCALE_{i}) + math.pi


class Layer{i}(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return helper_{i}(self.proj(x))


@model_registry.register("unrelated_{i}", version="1.0")
class Model{i}(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer{i}(dim) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
'''


def add_unrelated(catalog: Path, count: int) -> None:
    folder = catalog / "components" / "unrelated"
    folder.mkdir()
    (folder / "__init__.py").write_text('"""Generated for the scaling benchmark."""\n')
    for i in range(count):
        (folder / f"mod_{i:03d}.py").write_text(UNRELATED.format(i=i))


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def stage_runs(catalog: Path, cache: Path, runs: int, *, cold: bool) -> list[dict]:
    results = []
    for _ in range(runs):
        if cold:
            shutil.rmtree(cache, ignore_errors=True)
        results.append(run_worker("stages", str(catalog), str(cache)))
    return results


def row(label: str, results: list[dict]) -> str:
    keys = ("index", "resolve", "inline", "stages", "wall")
    return f"{label:<34}" + "".join(f"{median(results, k) * 1000:>10.0f}" for k in keys)


def main() -> None:
    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scaling", default="0,50,200", help="extra unrelated modules, comma-separated")
    parser.add_argument(
        "--sections", default="stages,scaling,builds", help="any of stages, scaling, builds, goals (comma-separated)"
    )
    parser.add_argument(
        "--against", default=None, help="goals: a git revision whose generator is timed side by side (e.g. HEAD~3)"
    )
    parser.add_argument("--specs", default=None, help="builds: these specs/*.yaml names only (comma-separated)")
    parser.add_argument(
        "--catalog", default=None, help="the folder holding the components/ to time (default: this repository's)"
    )
    args = parser.parse_args()
    global CATALOG_SOURCE
    if args.catalog:
        CATALOG_SOURCE = Path(args.catalog).resolve()
    compileall.compile_dir(REPO / "generator", quiet=1)
    sections = set(args.sections.split(","))
    header = f"{'':<34}" + "".join(f"{k:>10}" for k in ("index", "resolve", "inline", "i+r+i", "process"))

    with tempfile.TemporaryDirectory(prefix="sigmae-bench-") as tmp:
        tmp_path = Path(tmp)
        print(f"sigmae-gen generator benchmark: median of {args.runs} fresh processes, times in ms")
        print(f"python {sys.version.split()[0]}; roots: every registered non-fixture component\n")

        if "stages" in sections:
            stages_section(tmp_path, args.runs, header)
        specs = sorted(p for p in (REPO / "specs").glob("*.yaml") if not p.name.startswith("_"))
        if args.specs:
            wanted = {name if name.endswith(".yaml") else f"{name}.yaml" for name in args.specs.split(",")}
            specs = [p for p in specs if p.name in wanted]
        try:
            import generator.build as build_module

            has_build = hasattr(build_module, "build_spec")
        except Exception:  # the other half of the generator may not have landed
            has_build = False
        if "scaling" in sections:
            scaling_section(tmp_path, args.runs, header, [int(c) for c in args.scaling.split(",")], has_build)
        if "builds" in sections:
            builds_section(tmp_path, args.runs, specs, has_build)
        if "goals" in sections:
            goals_section(tmp_path, args.runs, args.against)


def stages_section(tmp_path: Path, runs: int, header: str) -> None:
    catalog = copy_catalog(tmp_path / "base")
    cache = tmp_path / "cache-base"
    cold = stage_runs(catalog, cache, runs, cold=True)
    warm = stage_runs(catalog, cache, runs, cold=False)
    print("Real catalog: index + resolve + inline")
    print(header)
    print(row("cold (empty cache)", cold))
    print(row("warm", warm))
    facts = warm[-1]
    print(
        f"\nTree shaking (ESC-50-like roots: esc50 + synthetic_audio + kaldi_fbank + audiomae++ + every "
        f"recipe + runtime): the emitted definitions span {facts['emitted_source_lines']} source lines of the "
        f"{facts['touched_lines']} lines in the {facts['touched_modules']} touched modules "
        f"({facts['emitted_source_lines'] / max(facts['touched_lines'], 1):.0%}); black at 88 columns makes "
        f"them {facts['emitted_lines']} lines. Catalog: {facts['modules']} modules, "
        f"{facts['catalog_lines']} lines; all components together emit {facts['all_components_lines']} lines "
        f"({facts['definitions']} definitions, {facts['excluded']} definitions of touched modules left out)."
    )


def scaling_section(tmp_path: Path, runs: int, header: str, counts: list[int], has_build: bool) -> None:
    scaling_spec = REPO / "specs" / "esc50_audiomae.yaml"
    full = has_build and scaling_spec.is_file()
    print("\nScaling: warm times with extra unrelated catalog modules (each registers a model)")
    print("(runs interleaved across the catalog sizes, so machine noise hits them alike)")
    print(header + ("   full build of esc50_audiomae.yaml" if full else ""))
    prepared = {}
    for count in counts:
        catalog = copy_catalog(tmp_path / f"scale-{count}")
        add_unrelated(catalog, count)
        scale_cache = tmp_path / f"cache-scale-{count}"
        out = tmp_path / f"out-scale-{count}"
        stage_runs(catalog, scale_cache, 1, cold=True)  # fill the caches
        if full:
            run_worker("build", str(scaling_spec), str(catalog), str(out))
        prepared[count] = (catalog, scale_cache, out)
    time.sleep(2.1)  # let the files age past the index's racy-timestamp margin
    stage_results: dict[int, list[dict]] = {c: [] for c in counts}
    build_results: dict[int, list[dict]] = {c: [] for c in counts}
    for _ in range(runs):
        for count in counts:
            catalog, scale_cache, out = prepared[count]
            stage_results[count].append(run_worker("stages", str(catalog), str(scale_cache)))
            if full:
                build_results[count].append(run_worker("build", str(scaling_spec), str(catalog), str(out)))
    for count in counts:
        results = stage_results[count]
        stages, first = median(results, "stages"), median(stage_results[counts[0]], "stages")
        line = row(f"+{count} modules ({results[0]['modules']} total)", results) + f"   {stages / first - 1:+.0%}"
        if full:
            total, base_total = median(build_results[count], "total"), median(build_results[counts[0]], "total")
            line += f"   {total * 1000:.0f} ms ({total / base_total - 1:+.0%})"
        print(line)


def builds_section(tmp_path: Path, runs: int, specs: list[Path], has_build: bool) -> None:
    print(
        f"\nFull builds (script + notebook + tests), per shipped spec: in-process time (build_spec's total, "
        f"imports excluded), median of {runs} fresh processes; goals (issue 13 D.2): cold <= "
        f"{COLD_GOAL * 1000:.0f} ms (empty cache), warm <= {WARM_GOAL * 1000:.0f} ms (the cache a build filled)"
    )
    if not specs or not has_build:
        print("  skipped: " + ("no specs/*.yaml yet" if not specs else "generator.build.build_spec not available"))
        return
    build_catalog = copy_catalog(tmp_path / "build")
    edited = build_catalog / EDITED_MODULE
    for spec in specs:
        cold_runs, warm_runs, edit_runs = [], [], []
        try:
            for run in range(runs):  # cold, warm and edited alternate, so machine noise hits all alike
                shutil.rmtree(build_catalog / ".sigmae-cache", ignore_errors=True)
                cold_runs.append(run_worker("build", str(spec), str(build_catalog), str(tmp_path / "out")))
                warm_runs.append(run_worker("build", str(spec), str(build_catalog), str(tmp_path / "out")))
                with edited.open("a", encoding="utf-8") as handle:  # a module every build reads changes
                    handle.write(f"# edited for the benchmark ({run})\n")
                edit_runs.append(run_worker("build", str(spec), str(build_catalog), str(tmp_path / "out")))
        except SystemExit as exc:
            print(f"  {spec.name}: build failed: {str(exc).splitlines()[-1]}")
            continue
        cold, warm, edit = median(cold_runs, "total"), median(warm_runs, "total"), median(edit_runs, "total")
        print(
            f"  {spec.name:<30} cold {cold * 1000:>5.0f} ms ({verdict(cold, COLD_GOAL)})   warm "
            f"{warm * 1000:>4.0f} ms ({verdict(warm, WARM_GOAL)})   [cpu: cold {median(cold_runs, 'cpu') * 1000:.0f}, "
            f"warm {median(warm_runs, 'cpu') * 1000:.0f} ms; process incl. imports: cold "
            f"{median(cold_runs, 'wall') * 1000:.0f} ms, warm {median(warm_runs, 'wall') * 1000:.0f} ms]"
        )
        print(
            f"    after an edit to {EDITED_MODULE} (warm caches, the compile cache misses): {edit * 1000:.0f} ms "
            f"(cpu {median(edit_runs, 'cpu') * 1000:.0f} ms)"
        )
        stages = [k for k in cold_runs[0] if k not in {"process_total", "wall", "total", "cpu"}]
        for label, results in (("cold", cold_runs), ("warm", warm_runs), ("edited", edit_runs)):
            print(f"    {label} stages: " + ", ".join(f"{k} {median(results, k) * 1000:.0f}" for k in stages))


def verdict(value: float, goal: float) -> str:
    return f"goal <= {goal * 1000:.0f} ms: " + ("met" if value <= goal else "NOT met")




def goals_section(tmp_path: Path, runs: int, against: str | None) -> None:
    """ESC-50 cold and warm builds of this generator, with each cache switched off in turn, and
    (``--against REV``) of an older generator: runs interleaved, so machine noise hits all alike."""
    catalog = copy_catalog(tmp_path / "goals")
    variants: list[tuple[str, Path, str]] = [("as is", REPO, "as is"), ("no black cache", REPO, "no black cache"), ("no index snapshot", REPO, "no index snapshot"), ("no compile cache", REPO, "no compile cache")]
    if against:
        ref = tmp_path / "ref"
        ref.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", against, "generator", "templates", "components"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(ref)], input=archive, check=True)
        compileall.compile_dir(ref / "generator", quiet=1)
        variants.append((f"generator at {against}", ref, "as is"))
    spec = REPO / "specs" / GOAL_SPEC
    results: dict[str, dict[str, list[dict]]] = {label: {"cold": [], "warm": []} for label, _, _ in variants}
    for _ in range(runs):
        for label, root, variant in variants:
            cache = catalog / ".sigmae-cache"
            shutil.rmtree(cache, ignore_errors=True)
            out = str(tmp_path / "out")
            results[label]["cold"].append(run_worker("build", str(spec), str(catalog), out, str(root), variant))
            results[label]["warm"].append(run_worker("build", str(spec), str(catalog), out, str(root), variant))
    repeat = [run_worker("build", str(spec), str(catalog), str(tmp_path / "out"), str(REPO), "repeat") for _ in range(runs)]
    base = results["as is"]
    print(f"\nGoals: {GOAL_SPEC}, in-process build time (build_spec's total), median of {runs}, runs interleaved")
    print(f"{'':<34}{'cold ms':>10}{'ratio':>8}{'warm ms':>10}{'ratio':>8}{'cpu cold':>10}{'warm':>6}   (ratio: this row / 'as is')")
    for label, _, _ in variants:
        cold, warm = median(results[label]["cold"], "total"), median(results[label]["warm"], "total")
        cpu = f"{median(results[label]['cold'], 'cpu') * 1000:>10.0f}{median(results[label]['warm'], 'cpu') * 1000:>6.0f}" if "cpu" in results[label]["cold"][0] else ""
        print(f"{label:<34}{cold * 1000:>10.0f}{cold / median(base['cold'], 'total'):>8.2f}{warm * 1000:>10.0f}{warm / median(base['warm'], 'total'):>8.2f}{cpu}")
    again = median(repeat, "total")
    print(f"{'as is, built again in one process':<34}{'':>18}{again * 1000:>10.0f}{again / median(base['warm'], 'total'):>8.2f}")
    cold, warm = median(base["cold"], "total"), median(base["warm"], "total")
    print(
        f"as is: cold {cold * 1000:.0f} ms ({verdict(cold, COLD_GOAL)}); warm {warm * 1000:.0f} ms "
        f"({verdict(warm, WARM_GOAL)}; fresh process), {again * 1000:.0f} ms built again in one process"
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        kind, *rest = sys.argv[2:]
        if kind == "stages":
            output = worker_stages(Path(rest[0]), Path(rest[1]))
        else:
            output = worker_build(Path(rest[0]), Path(rest[1]), Path(rest[2]), *([Path(rest[3]), rest[4]] if len(rest) > 3 else []))
        print(json.dumps(output))
    else:
        main()
