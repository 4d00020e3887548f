"""`sigmae-gen`: build, check, list, explain, new, diff.

Exit codes mean something (as black's do): 0 ok, 1 `build --check` found drift, 2 a user
error (bad spec, bad flag, catalog problem) reported as one line without a traceback
(`--debug` shows it). Anything else is a bug in the tool: exit 3 with the traceback.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

import click

import generator
from generator.analysis import CatalogError
from generator.errors import SigmaeError


class UserError(click.ClickException):
    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(generator.__version__, prog_name="sigmae-gen")
@click.option("--debug", is_flag=True, help="Show tracebacks of user errors.")
@click.option(
    "--catalog",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder that holds the catalog package components/ (default: this installation's).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, catalog: Path | None) -> None:
    """Generate self-contained MAE training scripts, notebooks and tests from YAML specs."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["catalog"] = catalog


def _index(ctx: click.Context):
    from generator.build import load_index

    return load_index(ctx.obj.get("catalog"))


def _resolve_spec(index, spec_path: Path, overrides: Sequence[str]):
    """The validated spec and its resolution: what `check` and `explain` need (no inlining, nothing emitted)."""
    from generator.resolve import spec_roots
    from generator.resolve import resolve
    from generator.spec import load_spec

    spec = load_spec(spec_path, index, overrides)
    return spec, resolve(index, spec_roots(spec))


spec_argument = click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path))
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec value, e.g. --set model.with.embed_dim=384 (typed by YAML rules).")


@cli.command()
@spec_argument
@click.option("-o", "--out-dir", type=click.Path(path_type=Path), default=Path("build"), show_default=True, help="Builds go to OUT_DIR/<spec name>/.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 with a diff when the files on disk differ from a fresh build.")
@set_option
@click.option(
    "--repo-url",
    default=None,
    help="GitHub URL of the repository holding OUT_DIR, for the notebook's Open-in-Colab badge "
    "(default: [tool.sigmae-gen] repo-url of its pyproject.toml, else its GitHub remote origin; none: no badge).",
)
@click.pass_context
def build(ctx: click.Context, specs: tuple[Path, ...], out_dir: Path, check: bool, overrides: tuple[str, ...], repo_url: str | None) -> int:
    """Build each SPEC into OUT_DIR/<name>/ (script, notebook, tests, README)."""
    from generator.build import build_spec

    index = _index(ctx)
    _refuse_shared_names(specs, overrides, out_dir)
    drifted = 0
    warned: set[str] = set()
    for spec_path in specs:
        result = build_spec(spec_path, out_dir, overrides=overrides, check=check, index=index, repo_url=repo_url)
        for warning in result.warnings:
            if warning not in warned:  # one line per reason, not one per spec
                warned.add(warning)
                click.echo(f"warning: {warning}", err=True)
        if not check:
            click.echo(f"built {result.out_dir} ({', '.join(sorted(result.files))}) in {result.timings['total']:.2f} s")
        elif result.up_to_date:
            click.echo(f"up to date: {result.out_dir}")
        else:
            drifted += 1
            drift = result.drift
            assert drift is not None
            click.echo(f"out of date: {result.out_dir} (rebuild with `sigmae-gen build {spec_path}`)", err=True)
            click.echo(drift.diff.rstrip("\n"), err=True)
    return 1 if drifted else 0


def _refuse_shared_names(specs: Sequence[Path], overrides: Sequence[str], out_dir: Path) -> None:
    """Two specs of one `name` would build into one folder, the second over the first: refuse
    before anything is written. A spec that does not load is left to its own build to report."""
    from generator.spec import load_document

    seen: dict[str, Path] = {}
    for spec_path in specs:
        try:
            root, _ = load_document(spec_path, overrides)
        except SigmaeError:
            continue
        name_node = root.value.get("name") if root.is_mapping else None
        name = name_node.value if name_node is not None else None
        if not isinstance(name, str):
            continue
        if name in seen:
            raise UserError(
                f"{seen[name]} and {spec_path} both have name {name!r}, so both would build into {out_dir / name}; "
                "give one of them another name: (or build them in separate calls with different -o)"
            )
        seen[name] = spec_path


@cli.command()
@spec_argument
@set_option
@click.pass_context
def check(ctx: click.Context, specs: tuple[Path, ...], overrides: tuple[str, ...]) -> int:
    """Validate each SPEC against the catalog and resolve its code, without building."""
    index = _index(ctx)
    for spec_path in specs:
        spec, resolution = _resolve_spec(index, spec_path, overrides)
        steps = ", ".join(f"{c.section}={c.component.name}" for c in spec.steps)
        click.echo(
            f"ok: {spec_path} ({spec.name}): data={spec.data.component.name} transform={spec.transform.component.name} "
            f"model={spec.model.component.name} steps: {steps}; {len(resolution.order)} definitions"
        )
    return 0


def _one_line(source: str) -> str:
    """Source text of an annotation or default on one line (black may have wrapped it)."""
    text = " ".join(source.split())
    return text.replace("[ ", "[").replace("( ", "(").replace(", ]", "]").replace(" ]", "]").replace(" )", ")")


@cli.command(name="list")
@click.option("--kind", default=None, help="Only this kind (model, data, transform, recipe, loss, fixture).")
@click.pass_context
def list_components(ctx: click.Context, kind: str | None) -> int:
    """List catalog components with versions and parameters (defaults and descriptions shown)."""
    from generator.spec import did_you_mean

    index = _index(ctx)
    kinds = sorted({k for k, _ in index.components})
    if kind is not None and kind not in kinds:
        raise UserError(f"unknown kind {kind!r}.{did_you_mean(kind, kinds)} Kinds: {', '.join(kinds) or '(none)'}")
    for each in [kind] if kind else [k for k in kinds if k != "fixture"]:
        click.echo(f"{each}:")
        for component in index.components_of(each):
            click.echo(f"  {component.name}  v{component.version}  ({component.path.as_posix()}:{component.lineno}, {component.qualname})")
            signatures = []
            for param in component.params:
                annotation = f": {_one_line(param.annotation)}" if param.annotation else ""
                default = "  (required)" if param.required else f" = {_one_line(param.default)}"
                signatures.append(f"{param.name}{annotation}{default}")
            # Descriptions (the docstring's `Args:` entries) in one column after the signatures.
            width = min(max(map(len, signatures), default=0), 44)
            for signature, param in zip(signatures, component.params):
                line = f"      {signature:<{width}}  {param.description}" if param.description else f"      {signature}"
                click.echo(line.rstrip())
    return 0


@cli.command()
@click.argument("spec_path", type=click.Path(path_type=Path))
@set_option
@click.pass_context
def explain(ctx: click.Context, spec_path: Path, overrides: tuple[str, ...]) -> int:
    """Print why each emitted definition is in the script, and what was left out."""
    from generator.resolve import explain as explain_resolution

    index = _index(ctx)
    _, resolution = _resolve_spec(index, spec_path, overrides)
    click.echo(explain_resolution(index, resolution).rstrip("\n"))
    return 0


@cli.command()
@click.argument("edited", type=click.Path(path_type=Path))
@click.option("--build", "build_dir", type=click.Path(path_type=Path), default=None, help="The build folder EDITED came from (default: build/<spec name in its header>).")
@click.pass_context
def diff(ctx: click.Context, edited: Path, build_dir: Path | None) -> int:
    """Turn edits of an emitted script or notebook into a catalog patch (stdout) and spec changes (stderr)."""
    from generator.build import PROJECT_ROOT
    from generator.diff import diff_edited, render_report

    report = diff_edited(edited, build=build_dir, root=ctx.obj.get("catalog") or PROJECT_ROOT)
    out, notes = render_report(report)
    if notes:
        click.echo(notes.rstrip("\n"), err=True)
    click.echo(out, nl=False)
    return 0


@cli.command()
@click.argument("kind")
@click.argument("name")
@click.pass_context
def new(ctx: click.Context, kind: str, name: str) -> int:
    """Scaffold a catalog module for component NAME of KIND, with its contract fixture stub."""
    from generator.build import PROJECT_ROOT
    from generator.scaffold import scaffold

    root = ctx.obj.get("catalog") or PROJECT_ROOT
    for path in scaffold(Path(root), kind, name):
        click.echo(f"wrote {path}")
    click.echo("next: implement it, fill in the fixture, then run `pytest -q tests` (the contract tests fail until then)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: runs the CLI and maps outcomes to exit codes (0, 1, 2, 3)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    started = time.perf_counter()
    try:
        result = cli.main(args=args, prog_name="sigmae-gen", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 2
    except UserError as exc:
        _report(f"error: {exc.format_message()}", debug)
        return 2
    except click.ClickException as exc:  # usage errors: bad option, missing argument
        exc.show()
        return 2
    except (SigmaeError, CatalogError) as exc:
        _report(f"error: {exc}", debug)
        return 2
    except OSError as exc:  # unreadable spec folder, unwritable output folder, full disk
        where = f"{exc.filename}: " if exc.filename else ""  # a full disk names no file
        _report(f"error: {where}{exc.strerror or exc}; check the path, its permissions and free space", debug)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception:  # a bug in the tool, not in the user's input
        click.echo(traceback.format_exc().rstrip("\n"), err=True)
        click.echo(f"internal error in sigmae-gen {generator.__version__} after {time.perf_counter() - started:.1f} s; please report it with the traceback above", err=True)
        return 3
    return int(result or 0) if isinstance(result, int) else 0


def _report(message: str, debug: bool, printer: Callable[..., None] = click.echo) -> None:
    if debug:
        printer(traceback.format_exc().rstrip("\n"), err=True)
    printer(message, err=True)


if __name__ == "__main__":
    raise SystemExit(main())
