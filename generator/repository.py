"""Where a build's notebook lives on GitHub: the URL of its "Open in Colab" badge.

The repository is the nearest folder at or above the output folder that holds a
`pyproject.toml` with `[tool.sigmae-gen] repo-url`, or a `.git`. Its URL is, first match wins:
`--repo-url`, that `repo-url` setting (`repo-url = ""` means "no badge", on every machine),
the git remote `origin` when it is on GitHub (https, ssh or `git@github.com:` form). The
link's path is the notebook's path relative to that folder, so `-o DIR` links what is really
there. With no URL, or an output outside any repository, there is no badge (never a dead
link) and the build says why in one warning.

Determinism: the URL depends only on the output folder's repository, never on the current
folder or the time. A git remote differs between clones (a fork, a CI checkout, a copy with
no remote), so a project that commits its builds sets `repo-url` in its pyproject.toml.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from generator.errors import OutputError

DEFAULT_BRANCH = "main"
_SETTING = re.compile(r'repo-url\s*=\s*"([^"]*)"\s*(#.*)?')
_SCP_FORM = re.compile(r"(?:[^@/]+@)?github\.com:(?P<path>[^/].*)")


@dataclass(frozen=True)
class Badge:
    """The notebook's Colab URL, or None with the reason (one warning line)."""

    url: str | None
    warning: str | None = None


def pyproject_repo_url(folder: Path) -> str | None:
    """`[tool.sigmae-gen] repo-url` of `folder/pyproject.toml` (None when unset; "" is "no badge").

    Read line by line rather than with tomllib, which Python 3.10 lacks: the same file must
    give the same URL on every supported Python.
    """
    try:
        text = (folder / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    table = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            table = line.split("#", 1)[0].strip()
        elif table == "[tool.sigmae-gen]" and line.startswith("repo-url"):
            match = _SETTING.fullmatch(line)
            if match:
                return match.group(1).strip()
    return None


def github_repository(url: str) -> tuple[str, str] | None:
    """(owner, repo) of a GitHub URL in any form git accepts, else None.

    Credentials in the URL (`https://user:token@github.com/...`) are never part of the result.
    """
    url = url.strip()
    scp = _SCP_FORM.fullmatch(url)
    if scp and "://" not in url:
        path = scp.group("path")
    else:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            return None
        if parts.scheme not in ("https", "http", "ssh", "git") or host not in ("github.com", "www.github.com"):
            return None
        path = parts.path
    pieces = [piece for piece in path.strip("/").split("/") if piece]
    if len(pieces) != 2:
        return None
    owner, repo = pieces[0], pieces[1].removesuffix(".git")
    if not all(re.fullmatch(r"[A-Za-z0-9_.-]+", piece) for piece in (owner, repo)) or repo in ("", ".", ".."):
        return None
    return owner, repo


def shown(url: str) -> str:
    """A URL as a warning may print it: without credentials."""
    return re.sub(r"^([a-z+]+://)[^/@]*@", r"\1", url.strip(), flags=re.IGNORECASE)


def git_remote_url(folder: Path) -> str | None:
    """`git config --get remote.origin.url` in `folder` (None without git, a remote, or a repository)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=20, env=env, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    url = done.stdout.strip()
    return url if done.returncode == 0 and url else None


def repository_root(out_root: Path) -> tuple[Path, str | None] | None:
    """(the repository folder holding `out_root`, its `repo-url` setting), None outside any."""
    start = Path(os.path.abspath(out_root))
    try:
        start = start.resolve()
    except (OSError, RuntimeError):
        pass
    for folder in (start, *start.parents):
        setting = pyproject_repo_url(folder)
        if setting is not None:
            return folder, setting
        if (folder / ".git").exists():
            return folder, None
    return None


def colab_badge(out_root: str | Path, name: str, repo_url: str | None = None, branch: str = DEFAULT_BRANCH) -> Badge:
    """The Colab URL of `out_root/name/name.ipynb`, or why there is none."""
    found = repository_root(Path(out_root))
    notebook = f"the notebooks built into {Path(out_root)}"
    if found is None:
        return Badge(None, f"no Colab badge for {notebook}: that folder is not inside a git repository, so they have no GitHub address (build into a folder of a repository)")
    root, setting = found
    relative = (Path(os.path.abspath(out_root)).resolve() / name / f"{name}.ipynb").relative_to(root).as_posix()
    if repo_url is not None:
        source, url = "--repo-url", repo_url
    elif setting is not None:
        source, url = f"repo-url in {root / 'pyproject.toml'}", setting
        if not url:
            return Badge(None, f"no Colab badge for {notebook}: {source} is empty (write the repository's https://github.com/OWNER/REPO there for one)")
    else:
        remote = git_remote_url(root)
        if remote is None:
            return Badge(
                None,
                f"no Colab badge for {notebook}: no repository URL (set [tool.sigmae-gen] repo-url = \"https://github.com/OWNER/REPO\" "
                f"in {root / 'pyproject.toml'}, pass --repo-url, or add a GitHub remote origin)",
            )
        if github_repository(remote) is None:
            return Badge(None, f"no Colab badge for {notebook}: the git remote origin {shown(remote)} is not on GitHub (set [tool.sigmae-gen] repo-url or pass --repo-url)")
        source, url = "the git remote origin", remote
    repository = github_repository(url)
    if repository is None:
        raise OutputError(f"{source}: {shown(url)!r} is not a GitHub repository URL; write it like https://github.com/OWNER/REPO (Colab opens notebooks from GitHub)")
    owner, repo = repository
    return Badge(f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/{relative}")
