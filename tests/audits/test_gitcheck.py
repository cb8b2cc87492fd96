"""The git check on real repositories made here: a clean one, a dirty one (counts), one ahead of and behind a
local bare upstream; "not a git repository" is a finding, also inside the portal's own checkout (var/ is in it)."""

import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from apps.audits.gitcheck import check_git, parse_branch_line
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> str:
    """git in `cwd` with a test identity and no user or system config; never above tmp (the ceiling)."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CEILING_DIRECTORIES": str(Path(cwd).resolve().parent),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def repo(path: Path, commits: int = 1) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for n in range(commits):
        (path / f"file{n}.txt").write_text(f"{n}\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"commit {n}")
    return path


def test_a_clean_repository(tmp_path):
    root = repo(tmp_path / "vx11", commits=2)
    result = check_git(root)
    assert "finding" not in result
    assert (result["branch"], result["clean"], result["detached"]) == ("main", True, False)
    assert (result["modified"], result["untracked"], result["upstream"], result["ahead"], result["behind"]) == (
        0,
        0,
        None,
        0,
        0,
    )
    head = git(root, "rev-parse", "HEAD")
    assert result["last_commit"]["hash"] == head and result["last_commit"]["subject"] == "commit 1"
    committed = datetime.fromisoformat(result["last_commit"]["date"])
    assert committed.utcoffset().total_seconds() == 0 and abs((datetime.now(UTC) - committed).total_seconds()) < 600


def test_a_dirty_repository_is_counted(tmp_path):
    root = repo(tmp_path / "vx11", commits=3)
    (root / "file0.txt").write_text("changed\n")  # modified, not staged
    (root / "file1.txt").write_text("changed\n")
    git(root, "add", "file1.txt")  # modified and staged
    (root / "file2.txt").unlink()  # deleted
    (root / "new.txt").write_text("new\n")
    git(root, "add", "new.txt")  # added
    (root / "untracked_a.txt").write_text("a")
    (root / "sub").mkdir()
    (root / "sub/untracked_b.txt").write_text("b")
    result = check_git(root)
    assert result["clean"] is False
    assert (result["modified"], result["staged"], result["unstaged"], result["untracked"]) == (4, 2, 2, 2)


def test_ahead_and_behind_a_local_bare_upstream(tmp_path):
    upstream = tmp_path / "upstream.git"
    upstream.mkdir()
    git(upstream, "init", "-q", "--bare", "-b", "main")
    seed = repo(tmp_path / "seed")
    git(seed, "remote", "add", "origin", str(upstream))
    git(seed, "push", "-q", "origin", "main")
    git(tmp_path, "clone", "-q", str(upstream), "vx11")
    root = tmp_path / "vx11"
    for n in range(2):  # two commits pushed by someone else: the checkout is behind by 2
        (seed / f"other{n}.txt").write_text("x")
        git(seed, "add", "-A")
        git(seed, "commit", "-q", "-m", f"other {n}")
    git(seed, "push", "-q", "origin", "main")
    git(root, "fetch", "-q")
    (root / "mine.txt").write_text("mine")  # one local commit: ahead by 1
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "mine")
    result = check_git(root)
    assert (result["branch"], result["upstream"], result["ahead"], result["behind"]) == ("main", "origin/main", 1, 2)
    assert result["clean"] is True and result["last_commit"]["subject"] == "mine"


def test_no_commit_yet_and_a_detached_head(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "trunk")
    result = check_git(empty)
    assert (result["branch"], result["last_commit"]) == ("trunk", None)
    root = repo(tmp_path / "vx11", commits=2)
    git(root, "checkout", "-q", "HEAD~1")
    detached = check_git(root)
    assert detached["detached"] is True and detached["branch"] is None
    assert detached["last_commit"]["subject"] == "commit 0"


def test_not_a_repository_is_a_finding(tmp_path):
    (tmp_path / "plain").mkdir()
    assert check_git(tmp_path / "plain") == {
        "root": str(tmp_path / "plain"),
        "finding": "not a git repository",
        "detail": "fatal: not a git repository (or any of the parent directories): .git",
    }


def test_not_a_repository_inside_the_portals_own_checkout(settings):
    """var/ lives inside the portal's checkout: git must not answer with the portal's repository."""
    inside = ROOT / "var" / f"gitcheck-{uuid.uuid4().hex}"
    inside.mkdir(parents=True)
    try:
        if (ROOT / ".git").exists():  # the test means something only if a repository is around it
            plain = subprocess.run(
                ["git", "-C", str(inside), "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=10
            )
            assert Path(plain.stdout.strip()).resolve() == ROOT.resolve()
        result = check_git(inside)
        assert result["finding"] == "not a git repository"
        assert "branch" not in result
    finally:
        shutil.rmtree(inside)


def test_a_missing_root_a_bare_repository_and_no_git_are_findings(tmp_path, monkeypatch):
    assert check_git(tmp_path / "missing")["finding"] == "the root is missing or not a folder"
    bare = tmp_path / "bare.git"
    bare.mkdir()
    git(bare, "init", "-q", "--bare")
    assert check_git(bare)["finding"].startswith("a bare repository")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert check_git(tmp_path)["finding"] == "git is not installed (no git on PATH)"


def test_a_git_that_hangs_is_a_timeout_finding(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    slow_git = bin_dir / "git"
    slow_git.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    slow_git.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    (tmp_path / "vx11").mkdir()
    started = datetime.now(UTC)
    result = check_git(tmp_path / "vx11", timeout=0.5)
    assert result["finding"] == "git timed out after 0.5 s"
    assert (datetime.now(UTC) - started).total_seconds() < 10


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("## main", {"branch": "main", "upstream": None, "ahead": 0, "behind": 0}),
        ("## main...origin/main [ahead 3]", {"branch": "main", "upstream": "origin/main", "ahead": 3, "behind": 0}),
        ("## dev...up/dev [behind 7]", {"branch": "dev", "upstream": "up/dev", "ahead": 0, "behind": 7}),
        ("## f/x...o/f/x [ahead 1, behind 2]", {"branch": "f/x", "upstream": "o/f/x", "ahead": 1, "behind": 2}),
        ("## main...origin/main [gone]", {"branch": "main", "upstream": "origin/main", "upstream_gone": True}),
        ("## No commits yet on main", {"branch": "main", "upstream": None}),
        ("## HEAD (no branch)", {"branch": None, "detached": True}),
    ],
)
def test_the_branch_line(line, expected):
    parsed = parse_branch_line(line)
    assert {key: parsed[key] for key in expected} == expected
