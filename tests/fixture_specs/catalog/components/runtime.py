"""A small stdlib-only stand-in for the real runtime: flags from Config, smoke overrides, checkpoints.

It follows the contract of components/README.md §3 closely enough for the generator's tests:
`--smoke`, `--out-dir`, `--steps`, `--resume` and `--<section>.<field>` flags.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


@dataclass
class RunOptions:
    """Flags without a section."""

    smoke: bool = False
    data_dir: str | None = None
    download: bool = False
    out_dir: str | None = None
    resume: bool = False
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    steps: int | None = None


@dataclass(frozen=True)
class Step:
    section: str
    run: Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Pipeline:
    name: str
    spec_hash: str
    data: type
    transform: type
    model: type
    steps: tuple[Step, ...]
    smoke_data: type | None
    smoke: Mapping[str, Mapping[str, Any]]


@dataclass
class RunContext:
    """What a recipe gets: built components, options, a place for checkpoints, shared state."""

    options: RunOptions
    data: Any
    transform: Any
    model: Any
    out_dir: Path
    state: dict[str, Any] = field(default_factory=dict)

    def save_checkpoint(self, section: str, payload: dict[str, Any]) -> Path:
        path = self.out_dir / f"{section}.ckpt.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, sort_keys=True))
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, section: str) -> dict[str, Any] | None:
        path = self.out_dir / f"{section}.ckpt.json"
        if self.options.resume and path.exists():
            return json.loads(path.read_text())
        return None


def _parse_value(text: str, like: Any) -> Any:
    if isinstance(like, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(like, int):
        return int(text)
    if isinstance(like, float):
        return float(text)
    if isinstance(like, (tuple, list)):
        return type(like)(json.loads(text))
    if (
        like is None
    ):  # an Optional field left at None: read the text as JSON when it is JSON
        if text.lower() == "none":
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _parser(config: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="generated training script")
    for section in fields(config):
        values = getattr(config, section.name)
        for item in fields(values):
            default = getattr(values, item.name)
            flag = (
                f"--{item.name.replace('_', '-')}"
                if section.name == "run"
                else f"--{section.name}.{item.name}"
            )
            if isinstance(default, bool) and section.name == "run":
                parser.add_argument(
                    flag,
                    dest=f"{section.name}.{item.name}",
                    action="store_true",
                    default=None,
                )
            else:
                parser.add_argument(
                    flag,
                    dest=f"{section.name}.{item.name}",
                    default=None,
                    help=f"default: {default!r}",
                )
    return parser


def run_pipeline(
    pipeline: Pipeline, config_cls: type, argv: Sequence[str] | None = None
) -> int:
    config = config_cls()
    args = vars(_parser(config).parse_args(argv))
    smoke = bool(args.get("run.smoke"))
    sections = {item.name: getattr(config, item.name) for item in fields(config)}
    if smoke:
        for section, overrides in pipeline.smoke.items():
            if section != "data" and section in sections:
                sections[section] = replace(sections[section], **dict(overrides))
    for dest, text in args.items():
        if text is None:
            continue
        section, name = dest.split(".", 1)
        current = getattr(sections[section], name)
        value = text if isinstance(text, bool) else _parse_value(text, current)
        sections[section] = replace(sections[section], **{name: value})
    options: RunOptions = sections["run"]
    if smoke and pipeline.smoke_data is not None:
        data = pipeline.smoke_data(**dict(pipeline.smoke.get("data", {})))
    else:
        data = pipeline.data(**vars(sections["data"]))
    out_dir = Path(options.out_dir or f"runs/{pipeline.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(
        options,
        data,
        pipeline.transform(**vars(sections["transform"])),
        pipeline.model(**vars(sections["model"])),
        out_dir,
    )
    summaries = {}
    for step in pipeline.steps:
        summaries[step.section] = step.run(ctx, **vars(sections[step.section]))
    (out_dir / "summary.json").write_text(json.dumps(summaries, sort_keys=True))
    print(json.dumps(summaries, sort_keys=True))
    return 0
