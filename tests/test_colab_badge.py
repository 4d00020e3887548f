"""The notebook's Open-in-Colab badge (generator/repository.py): its GitHub URL comes from
`--repo-url`, else `[tool.sigmae-gen] repo-url` of the output's repository, else its git remote
origin on GitHub; its path is the notebook's real path in that repository (also with `-o`);
without either there is no badge, never a dead link, and one warning."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import generator.repository as repository
from generator.cli import main
from generator.repository import colab_badge, github_repository

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CATALOG = HERE / "fixture_specs" / "catalog"
TOY = HERE / "fixture_specs" / "toy.yaml"
COLAB = "https://colab.research.google.com/github/"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git_repository(folder: Path, remote: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    if remote is not None:
        subprocess.run(["git", "-C", str(folder), "remote", "add", "origin", remote], check=True)
    return folder


def build(capsys: pytest.CaptureFixture[str], out: Path, *args: str, specs: tuple[Path, ...] = (TOY,)) -> tuple[int, str]:
    code = main(["--catalog", str(CATALOG), "build", *map(str, specs), "-o", str(out), *args])
    return code, capsys.readouterr().err


def badge_text(build_dir: Path) -> tuple[str, str]:
    """The notebook's title cell and the build README."""
    notebook = json.loads((build_dir / "toy.ipynb").read_text(encoding="utf-8"))
    return "".join(notebook["cells"][0]["source"]), (build_dir / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/acme/mae", ("acme", "mae")),
        ("https://github.com/acme/mae.git", ("acme", "mae")),
        ("https://github.com/acme/mae/", ("acme", "mae")),
        ("https://user:s3cret@github.com/acme/mae.git", ("acme", "mae")),
        ("git@github.com:acme/mae.git", ("acme", "mae")),
        ("ssh://git@github.com/acme/mae.git", ("acme", "mae")),
        ("https://gitlab.com/acme/mae.git", None),
        ("git@gitlab.com:acme/mae.git", None),
        ("https://github.com/acme", None),
        ("https://github.com/acme/mae/tree/dev", None),
        ("/srv/git/mae.git", None),
        ("ftp://github.com/acme/mae", None),
    ],
)
def test_github_urls_in_every_form_git_accepts(url: str, expected: tuple[str, str] | None) -> None:
    assert github_repository(url) == expected


@needs_git
@pytest.mark.parametrize("remote", ["git@github.com:acme/mae.git", "https://github.com/acme/mae.git"])
def test_the_git_remote_gives_the_badge_with_the_notebooks_real_path_for_o(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, remote: str) -> None:
    repo = git_repository(tmp_path / "repo", remote)
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")  # a relative -o, from a subfolder of the repository
    code, err = build(capsys, Path("out/builds"))
    assert code == 0 and err == ""
    url = f"{COLAB}acme/mae/blob/main/sub/out/builds/toy/toy.ipynb"
    title, readme = badge_text(repo / "sub" / "out" / "builds" / "toy")
    assert f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})" in title
    assert readme.count(url) == 2  # the file table and the Colab line
    assert build(capsys, Path("out/builds"), "--check")[0] == 0  # check and build agree


@needs_git
def test_pyproject_repo_url_wins_over_the_remote_and_is_the_same_on_every_clone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = git_repository(tmp_path / "repo", "git@github.com:fork/other.git")
    (repo / "pyproject.toml").write_text('[tool.sigmae-gen]\nrepo-url = "https://github.com/pinned/mae"\n')
    code, err = build(capsys, repo / "build")
    assert code == 0 and err == ""
    title, readme = badge_text(repo / "build" / "toy")
    assert f"{COLAB}pinned/mae/blob/main/build/toy/toy.ipynb" in title and "fork" not in title + readme
    # --repo-url wins over both
    assert build(capsys, repo / "build", "--repo-url", "https://github.com/flag/mae")[0] == 0
    assert f"{COLAB}flag/mae/blob/main/build/toy/toy.ipynb" in badge_text(repo / "build" / "toy")[0]


def test_no_url_means_no_badge_and_one_warning_for_the_whole_build(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    monkeypatch.setattr(repository, "git_remote_url", lambda folder: None)  # no remote origin
    second = tmp_path / "toy2.yaml"
    second.write_text(TOY.read_text(encoding="utf-8").replace("name: toy\n", "name: toy2\n"))
    code, err = build(capsys, repo / "build", specs=(TOY, second))
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: no Colab badge for the notebooks built into"), lines
    assert "repo-url" in lines[0] and "--repo-url" in lines[0]
    for name in ("toy", "toy2"):
        notebook = (repo / "build" / name / f"{name}.ipynb").read_text(encoding="utf-8")
        readme = (repo / "build" / name / "README.md").read_text(encoding="utf-8")
        for text in (notebook, readme):
            assert COLAB not in text and "colab-badge" not in text and "OWNER" not in text
        assert f"upload `{name}.ipynb`" in readme
    assert build(capsys, repo / "build", "--check", specs=(TOY, second))[0] == 0


def test_an_empty_repo_url_turns_the_badge_off_even_with_a_github_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text('[tool.sigmae-gen]\nrepo-url = ""\n')
    monkeypatch.setattr(repository, "git_remote_url", lambda folder: "https://github.com/acme/mae.git")
    badge = colab_badge(tmp_path / "build", "toy")
    assert badge.url is None and badge.warning is not None and "is empty" in badge.warning


def test_an_output_outside_any_repository_has_no_badge_even_with_repo_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = build(capsys, tmp_path / "out", "--repo-url", "https://github.com/acme/mae")
    assert code == 0 and "not inside a git repository" in err and len(err.strip().splitlines()) == 1
    title, readme = badge_text(tmp_path / "out" / "toy")
    assert COLAB not in title + readme


@needs_git
def test_a_remote_off_github_is_a_warning_that_never_prints_its_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = git_repository(tmp_path / "repo", "https://user:s3cret@gitlab.example.org/acme/mae.git")
    code, err = build(capsys, repo / "build")
    assert code == 0 and "is not on GitHub" in err and "gitlab.example.org/acme/mae.git" in err
    assert "s3cret" not in err and COLAB not in badge_text(repo / "build" / "toy")[0]


def test_a_repo_url_setting_off_github_is_one_error_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.sigmae-gen]\nrepo-url = "https://gitlab.com/acme/mae"\n')
    code, err = build(capsys, tmp_path / "build")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(tmp_path / "pyproject.toml") in lines[0] and "https://github.com/OWNER/REPO" in lines[0]
    assert not (tmp_path / "build").exists()


def test_the_shipped_builds_do_not_depend_on_the_clones_git_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """This project pins `repo-url` in its pyproject.toml, so a clone with a GitHub remote (CI)
    builds the same bytes as one without: `build --check` and the drift tests agree everywhere."""
    assert repository.pyproject_repo_url(ROOT) is not None  # pinned ("" = no badge until the public URL is known)
    without = colab_badge(ROOT / "build", "esc50_audiomae")
    monkeypatch.setattr(repository, "git_remote_url", lambda folder: "git@github.com:someone/fork.git")
    assert colab_badge(ROOT / "build", "esc50_audiomae") == without
    assert without.url is None or "/OWNER/" not in without.url
