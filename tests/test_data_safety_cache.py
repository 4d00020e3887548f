"""Issue 11, item 13: the decoded-audio cache stays out of the user's data folder.

By default it lives under the user cache directory (`$XDG_CACHE_HOME/sigmae-gen/audio`, else
`~/.cache/sigmae-gen/audio`; `$SIGMAE_CACHE_DIR` replaces `.../sigmae-gen`), one sub-folder
per data root (a hash of its resolved path); `cache_dir` overrides it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from components.contracts.data import write_esc50_folder
from components.data.audio_io import default_audio_cache_dir, user_cache_dir
from components.data.esc50 import ESC50

README = Path(__file__).resolve().parents[1] / "README.md"


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def read_all(ds: ESC50) -> None:
    for i in range(len(ds)):
        ds[i]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("SIGMAE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def test_the_default_cache_is_under_xdg_cache_home_keyed_by_the_root(tmp_path: Path, clean_env: Path) -> None:
    root = write_esc50_folder(tmp_path / "ESC-50-master", clips_per_fold=1)
    before = files_under(root)
    ds = ESC50(root=str(root))
    read_all(ds)
    assert files_under(root) == before  # nothing written into the data folder
    key = hashlib.sha256(os.fsencode(os.path.realpath(root))).hexdigest()[:16]
    folder = clean_env / "sigmae-gen" / "audio" / key
    assert ds.cache is not None and ds.cache.directory == folder == default_audio_cache_dir(str(root))
    assert len([p for p in files_under(folder) if p.suffix == ".f32"]) == len(ds)


def test_two_roots_get_two_cache_folders(tmp_path: Path, clean_env: Path) -> None:
    a = write_esc50_folder(tmp_path / "a" / "ESC-50-master", clips_per_fold=1)
    b = write_esc50_folder(tmp_path / "b" / "ESC-50-master", clips_per_fold=1)
    assert ESC50(root=str(a)).cache.directory != ESC50(root=str(b)).cache.directory
    # The same root written another way (a relative path, a symbolic link) shares its folder.
    link = tmp_path / "link"
    link.symlink_to(a)
    assert ESC50(root=str(link)).cache.directory == ESC50(root=str(a)).cache.directory


def test_home_cache_when_xdg_is_unset_or_relative(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SIGMAE_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "sigmae-gen"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec says: ignore it
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "sigmae-gen"
    monkeypatch.setenv("SIGMAE_CACHE_DIR", str(tmp_path / "scratch"))
    assert user_cache_dir() == tmp_path / "scratch"


def test_cache_dir_overrides_and_cache_false_writes_nothing(tmp_path: Path, clean_env: Path) -> None:
    root = write_esc50_folder(tmp_path / "ESC-50-master", clips_per_fold=1)
    ds = ESC50(root=str(root), cache_dir=str(tmp_path / "mine"))
    read_all(ds)
    assert files_under(tmp_path / "mine") and not files_under(clean_env)
    read_all(ESC50(root=str(root), cache=False))
    assert not files_under(clean_env) and not (root / ".sigmae-cache").exists()


def test_an_unwritable_cache_folder_only_costs_speed(tmp_path: Path, clean_env: Path) -> None:
    clean_env.parent.mkdir(parents=True, exist_ok=True)
    clean_env.write_text("a file where the cache folder would go\n")
    root = write_esc50_folder(tmp_path / "ESC-50-master", clips_per_fold=1)
    read_all(ESC50(root=str(root)))


def test_the_build_readme_and_the_readme_say_where_caches_go(tmp_path: Path) -> None:
    from generator.build import build_spec

    specs = Path(__file__).resolve().parents[1] / "specs"
    folder = build_spec(specs / "folder_audio.yaml", tmp_path).files["README.md"]
    assert "sigmae-gen/audio/<hash of the data root>" in folder and "--data.cache_dir" in folder
    assert "XDG_CACHE_HOME" in folder and ".sigmae-cache" not in folder
    radioml = build_spec(specs / "radioml_audiomae.yaml", tmp_path).files["README.md"]
    assert "sigmae-gen/audio" not in radioml  # no decoded-audio cache there
    readme = README.read_text()
    using = readme.split("## Using it", 1)[1].split("\n## ", 1)[0]
    assert "sigmae-gen/audio" in using and ".sigmae-cache" in using
