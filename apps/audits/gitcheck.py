"""The managed tree's git state: branch, clean or not, upstream and ahead/behind, last commit.

`check_git(root, timeout=10)` is a plain function the audits runner calls. It runs the git CLI as an argument list
(never a shell), each call under `timeout` seconds, with an environment of its own (GIT_ENV below):
- GIT_CEILING_DIRECTORIES is the root's parent, so git looks for a repository at the root and never above it. The
  demo's tree lives in var/, inside the portal's own checkout: without the ceiling, a root that is no repository
  would report the portal's branch and changes as the fleet's.
- GIT_DIR, GIT_WORK_TREE and the rest of the caller's GIT_* variables are not passed on;
- GIT_OPTIONAL_LOCKS=0: `git status` does not refresh the index, so an audit writes nothing into the tree;
- LC_ALL=C: git's messages in English, which is how "not a git repository" is recognised.
What is not a result is a finding, never an exception: git missing, the root missing, "not a git repository",
a repository git refuses (another owner), a timeout. Then the answer is {"root", "finding", "detail"}.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

NOT_A_REPOSITORY = "not a git repository"
AHEAD_BEHIND = re.compile(r"\[(?:ahead (?P<ahead>\d+))?(?:, )?(?:behind (?P<behind>\d+))?(?P<gone>gone)?\]$")
DETAIL_CHARS = 500


class GitFinding(Exception):
    """Something that stops the check and is reported as its finding."""

    def __init__(self, finding: str, detail: str = ""):
        super().__init__(finding)
        self.finding = finding
        self.detail = detail[:DETAIL_CHARS]


def git_env(root: Path) -> dict[str, str]:
    """The environment every git call runs with (see the module's doc)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "LANG": "C",
        "GIT_CEILING_DIRECTORIES": str(root.parent),
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_TERMINAL_PROMPT": "0",
    }
    if os.environ.get("HOME"):  # the user's git config (safe.directory) still applies
        env["HOME"] = os.environ["HOME"]
    return env


def run_git(git: str, root: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """One git call in `root`; a timeout or a git that cannot start is a GitFinding."""
    argv = [git, "-C", str(root), *args]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=git_env(root), stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise GitFinding(f"git timed out after {timeout:g} s", " ".join(args)) from None
    except OSError as exc:
        raise GitFinding("git could not be run", str(exc)) from None


def refusal(proc: subprocess.CompletedProcess) -> GitFinding:
    """What a failed git call means, as a finding."""
    message = (proc.stderr or proc.stdout).strip()
    if NOT_A_REPOSITORY in message:
        return GitFinding(NOT_A_REPOSITORY, message)
    if "dubious ownership" in message:
        return GitFinding("git refuses the repository: it belongs to another user (safe.directory)", message)
    return GitFinding(f"git failed (exit {proc.returncode})", message)


def parse_branch_line(line: str) -> dict:
    """The `## ...` header of `git status --porcelain=v1 -b`: branch, upstream, ahead/behind, detached."""
    head = line[3:] if line.startswith("## ") else line
    info: dict = {"branch": None, "detached": False, "upstream": None, "ahead": 0, "behind": 0, "upstream_gone": False}
    for prefix in ("No commits yet on ", "Initial commit on "):
        if head.startswith(prefix):
            info["branch"] = head[len(prefix) :]
            return info
    if head.startswith("HEAD (no branch)"):
        info["detached"] = True
        return info
    counts = AHEAD_BEHIND.search(head)
    if counts:
        head = head[: counts.start()].rstrip()
        info["ahead"] = int(counts["ahead"] or 0)
        info["behind"] = int(counts["behind"] or 0)
        info["upstream_gone"] = bool(counts["gone"])
    branch, _, upstream = head.partition("...")  # ref names cannot contain "..", so this split is unambiguous
    info["branch"] = branch
    info["upstream"] = upstream or None
    return info


def count_changes(lines: list[str]) -> dict:
    """Counts of the porcelain v1 entries: staged, unstaged (tracked files), untracked, conflicted."""
    counts = {"modified": 0, "staged": 0, "unstaged": 0, "untracked": 0, "conflicted": 0}
    for line in lines:
        code = line[:2]
        if code == "??":
            counts["untracked"] += 1
            continue
        counts["modified"] += 1
        if code in ("DD", "AU", "UD", "UA", "DU", "AA", "UU"):
            counts["conflicted"] += 1
        if code[0] not in " ?":
            counts["staged"] += 1
        if code[1] != " ":
            counts["unstaged"] += 1
    return counts


def last_commit(git: str, root: Path, timeout: float) -> dict | None:
    """Hash, UTC date and subject of HEAD; None when the branch has no commit yet."""
    proc = run_git(git, root, ["log", "-1", "--format=%H%x00%cI%x00%s"], timeout)
    if proc.returncode != 0:
        if "does not have any commits" in proc.stderr:
            return None
        raise refusal(proc)
    sha, date, subject = (proc.stdout.rstrip("\n").split("\x00") + ["", "", ""])[:3]
    committed = datetime.fromisoformat(date).astimezone(UTC).isoformat() if date else None
    return {"hash": sha, "date": committed, "subject": subject}


def inspect(git: str, root: Path, timeout: float) -> dict:
    bare = run_git(git, root, ["rev-parse", "--is-bare-repository"], timeout)
    if bare.returncode != 0:
        raise refusal(bare)
    if bare.stdout.strip() == "true":
        raise GitFinding("a bare repository (no working tree to check)", str(root))
    top = run_git(git, root, ["rev-parse", "--show-toplevel"], timeout)
    if top.returncode != 0:
        raise refusal(top)
    toplevel = Path(top.stdout.strip()).resolve() if top.stdout.strip() else None
    if toplevel != root:  # the ceiling makes this impossible; checked so a surprise is a finding, not a wrong answer
        raise GitFinding(NOT_A_REPOSITORY, f"the repository found is {toplevel}, not {root}")
    status = run_git(git, root, ["status", "--porcelain=v1", "-b", "--untracked-files=normal"], timeout)
    if status.returncode != 0:
        raise refusal(status)
    lines = status.stdout.splitlines()
    branch = parse_branch_line(lines[0]) if lines and lines[0].startswith("## ") else parse_branch_line("")
    changes = count_changes([line for line in lines if not line.startswith("## ")])
    return {
        "root": str(root),
        **branch,
        "clean": changes["modified"] == 0 and changes["untracked"] == 0,
        **changes,
        "last_commit": last_commit(git, root, timeout),
    }


def check_git(root: Path, timeout: float = 10) -> dict:
    """The git state of the tree at `root`, or {"root", "finding", "detail"} (see the module's doc)."""
    root = Path(root)
    git = shutil.which("git")
    if git is None:
        return {"root": str(root), "finding": "git is not installed (no git on PATH)", "detail": ""}
    if not root.is_dir():
        return {"root": str(root), "finding": "the root is missing or not a folder", "detail": ""}
    try:
        return inspect(git, root.resolve(), timeout)
    except GitFinding as found:
        return {"root": str(root), "finding": found.finding, "detail": found.detail}
