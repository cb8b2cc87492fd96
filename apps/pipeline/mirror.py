"""Phase 7 of the autonomy pipeline: mirror a run's evidence to a git remote.

The portal owns a working clone (`repo`) of the mirror remote. One call copies the run's sealed BagIt bag to
`runs/<bag folder name>/` (every file, so `bagit.py --validate` works on the mirror copy) and the latest
PERCENTAGES.json / SCORECARD.json to `latest/`, commits when something changed, and pushes `HEAD` to
`refs/heads/<branch>`. A push that fails leaves its commits in the clone: the next call rebases them onto what
the remote got meanwhile (`-X theirs`: run folders never clash, latest/* takes ours) and pushes them too.
Nothing is ever force-pushed.

git runs as argument lists with a timeout per command, never prompting (GIT_TERMINAL_PROMPT=0, ssh in batch
mode). Credentials come only from the environment: a remote URL with a password is refused, and
VX11_MIRROR_TOKEN (for an http(s) remote) travels as an `http.extraHeader` through GIT_CONFIG_* variables, so it
is neither on a command line nor in .git/config, and it is masked in the log.

Only bad configuration raises (MirrorError); git missing, a timeout, an unreachable remote or a failed rebase
or push is a result with ok False and a message that says why. Django-free: the runner passes everything in.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_ENV = "VX11_MIRROR_TOKEN"
RUNS = "runs"
LATEST = "latest"
TAIL_LINES = 12
TAIL_CHARS = 1500
SHORT = 7
SHOWN_SHAS = 5
# variables of a surrounding git invocation (a hook, a test) that would point our commands at another repository
_INHERITED_GIT = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<netloc>[^/?#]*)")
_SCP = re.compile(r"^(?P<user>[^@/:]+)@(?P<rest>[^/:]+:.*)$")
_AUTHOR = re.compile(r"^(?P<name>[^<>]+?)\s*<(?P<email>[^<>\s]+)>$")
_BRANCH = re.compile(r"^(?!-)(?!/)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/-]+(?<!/)(?<!\.)(?<!\.lock)$")
_PLAIN_NAME = re.compile(r"^(?!\.)[A-Za-z0-9._-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class MirrorResult:
    ok: bool  # committed (or nothing new) AND pushed
    commit: str  # sha of the commit this call made ("" if nothing changed)
    pushed: bool  # the push succeeded
    pushed_commits: list[str] = field(default_factory=list)  # every commit the push delivered, oldest first
    unpushed: list[str] = field(default_factory=list)  # commits still only local after this call, oldest first
    message: str = ""  # one line for the phase summary
    log: str = ""  # every git command (credentials masked), its exit code and output tail


class MirrorError(Exception):
    """Bad configuration: no remote, credentials in the remote URL, an unusable repo path, author or branch."""


class _Failed(Exception):
    """git could not run (missing, timed out) or a step the call cannot go on without failed; says why."""


def shown_remote(remote: str) -> str:
    """`remote` with any userinfo masked (https://user:pass@host/x -> https://***@host/x, git@host:x -> ***@host:x),
    for messages and logs."""
    url = _URL.match(remote)
    if url:
        if "@" not in url["netloc"]:
            return remote
        host = url["netloc"].rsplit("@", 1)[1]
        return f"{url['scheme']}://***@{host}{remote[url.end() :]}"
    scp = _SCP.match(remote)
    if scp:
        return f"***@{scp['rest']}"
    return remote


def _check_remote(remote: str) -> bool:
    """MirrorError unless `remote` is usable; True when it is http(s) (where the token applies)."""
    if not remote or not remote.strip():
        raise MirrorError("no mirror remote configured")
    if remote.startswith("-") or _CONTROL.search(remote):
        raise MirrorError(f"the mirror remote {shown_remote(remote)!r} is not a URL or path git can use")
    url = _URL.match(remote)
    if not url:
        return False
    scheme = url["scheme"].lower()
    http = scheme in ("http", "https")
    if "@" in url["netloc"]:
        userinfo = url["netloc"].rsplit("@", 1)[0]
        # a lone user name in an http(s) URL is how tokens usually get pasted there
        if ":" in userinfo or http:
            raise MirrorError(
                f"credentials in the mirror remote URL ({shown_remote(remote)}): give the token in {TOKEN_ENV} instead"
            )
    return http


def _parse_author(author: str) -> tuple[str, str]:
    match = _AUTHOR.match(author.strip()) if author else None
    if not match or _CONTROL.search(author):
        raise MirrorError(f"the mirror author must read 'Name <email>', not {author!r}")
    return match["name"].strip(), match["email"]


def _child_env(repo: Path, http: bool, extra: dict | None) -> tuple[dict[str, str], str]:
    """The environment of every git command, and the token to mask (empty when none is used)."""
    env = dict(os.environ)
    if extra:
        env.update({str(key): str(value) for key, value in extra.items()})
    for name in _INHERITED_GIT:
        env.pop(name, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GCM_INTERACTIVE"] = "never"
    env["GIT_EDITOR"] = "true"
    env["LC_ALL"] = "C"  # the log and the messages quote git's English output
    # never let a command run in `repo` find a repository around it (the portal's own checkout holds var/)
    env["GIT_CEILING_DIRECTORIES"] = str(repo.parent)
    if "GIT_SSH" not in env and "GIT_SSH_COMMAND" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    token = env.pop(TOKEN_ENV, "").strip()  # git itself never needs the variable
    if not token or not http:
        return env, ""
    if _CONTROL.search(token):
        raise MirrorError(f"{TOKEN_ENV} holds a control character")
    try:
        index = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
    except ValueError:
        index = 0
    env[f"GIT_CONFIG_KEY_{index}"] = "http.extraHeader"
    env[f"GIT_CONFIG_VALUE_{index}"] = f"Authorization: Bearer {token}"
    env["GIT_CONFIG_COUNT"] = str(index + 1)
    return env, token


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()][-TAIL_LINES:]
    return "\n".join(lines)[-TAIL_CHARS:]


def _why(text: str) -> str:
    """The line of git's output that says why: its first CONFLICT, fatal: or error: line (the lines after it are
    hints), else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for prefix in ("CONFLICT", "fatal:", "error:"):
        for line in lines:
            if line.startswith(prefix):
                return line
    return lines[-1] if lines else "no output"


def _short(shas: list[str]) -> str:
    shown = ", ".join(sha[:SHORT] for sha in shas[:SHOWN_SHAS])
    more = len(shas) - SHOWN_SHAS
    return f"{shown}, +{more} more" if more > 0 else shown


def _commits(count: int) -> str:
    return f"{count} commit" if count == 1 else f"{count} commits"


class _Git:
    """Runs git commands and keeps the evidence log, masking the remote's userinfo and the token."""

    def __init__(self, exe: str | None, env: dict[str, str], timeout: float, remote: str, token: str):
        self.exe = exe
        self.env = env
        self.timeout = timeout
        self.remote = remote
        self.token = token
        self.lines: list[str] = []

    def mask(self, text: str) -> str:
        if self.token:
            text = text.replace(self.token, "***")
        shown = shown_remote(self.remote)
        if shown != self.remote:
            text = text.replace(self.remote, shown)
        return text

    def note(self, text: str) -> None:
        self.lines.append(f"# {self.mask(text)}")

    def run(self, args: list[str], cwd: Path) -> tuple[int, str]:
        """(exit code, output as git wrote it); _Failed when git is missing, cannot start or times out. The log
        gets the masked command and output; whoever quotes the output elsewhere masks it (result() does)."""
        shown = shlex.join(["git", *(self.mask(arg) for arg in args)])
        verb = _verb(args)
        if self.exe is None:
            self.lines.append(f"$ {shown}\n  not run: git is not installed")
            raise _Failed("git is not installed (not found on PATH)")
        try:
            proc = subprocess.Popen(
                [self.exe, *args],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,  # so a timeout ends its helpers (ssh, git-remote-https) too
            )
        except OSError as exc:
            self.lines.append(f"$ {shown}\n  not run: {exc}")
            raise _Failed(f"git {verb} could not start: {exc}") from exc
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                out, _ = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out = ""
            self.lines.append(f"$ {shown}\n  timed out after {self.timeout:g} s")
            self._output(out or "")
            raise _Failed(f"git {verb} timed out after {self.timeout:g} s") from None
        self.lines.append(f"$ {shown}\n  exit {proc.returncode}")
        self._output(out)
        return proc.returncode, out

    def _output(self, out: str) -> None:
        tail = _tail(self.mask(out))
        if tail:
            self.lines.append("\n".join(f"  | {line}" for line in tail.splitlines()))


def _verb(args: list[str]) -> str:
    """The git subcommand of `args`, past the leading `-c key=value` options."""
    index = 0
    while index < len(args) and args[index] in ("-c", "-C"):
        index += 2
    return args[index] if index < len(args) else "?"


@contextlib.contextmanager
def _repo_lock(repo: Path, timeout: float) -> Iterator[None]:
    """One mirror at a time per clone, across processes: two runs copying and committing in one work tree
    would commit each other's half-copied files."""
    path = repo.parent / f".{repo.name}.mirror-lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise MirrorError(f"cannot use {repo}: {exc}") from exc
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _Failed(f"another mirror into {repo} still runs after {timeout:g} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _within(path: Path, root: Path) -> Path:
    """`path` resolved, or _Failed when it resolves outside `root` (a symlink planted in the clone)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise _Failed(f"{path} resolves outside the mirror clone ({resolved})")
    return resolved


def _clear(path: Path) -> None:
    """Remove whatever non-folder or symlink sits where a folder or a file of ours must go; never follows it."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _folder(root: Path, parts: tuple[str, ...]) -> Path:
    """root/parts as real folders, made one level at a time so no symlink on the way is followed."""
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            _clear(current)
        current.mkdir(exist_ok=True)
    return _within(current, root)


def _bag_files(bag: Path, git: _Git) -> dict[Path, Path]:
    """relative path -> source file of every regular file in the bag; symlinks and .git folders are skipped."""
    files: dict[Path, Path] = {}
    for dirpath, dirnames, filenames in os.walk(bag):
        folder = Path(dirpath)
        for name in list(dirnames):
            path = folder / name
            if path.is_symlink() or name == ".git":
                git.note(f"skipped {path.relative_to(bag)}/: {'a symlink' if path.is_symlink() else 'a .git folder'}")
                dirnames.remove(name)
        for name in filenames:
            path = folder / name
            if path.is_symlink():
                git.note(f"skipped {path.relative_to(bag)}: a symlink")
            elif not path.is_file():
                git.note(f"skipped {path.relative_to(bag)}: not a regular file")
            else:
                files[path.relative_to(bag)] = path
    return files


class _Mirror:
    def __init__(self, git: _Git, repo: Path, remote: str, branch: str, author: tuple[str, str]):
        self.git = git
        self.repo = repo
        self.remote = remote
        self.branch = branch
        self.identity = ["-c", f"user.name={author[0]}", "-c", f"user.email={author[1]}"]
        self.commit = ""
        self.unpushed: list[str] | None = None
        self.rebased = False

    def run(self, args: list[str]) -> tuple[int, str]:
        return self.git.run(args, self.repo)

    def must(self, args: list[str]) -> str:
        code, out = self.run(args)
        if code != 0:
            raise _Failed(f"git {_verb(args)} failed (exit {code}): {_why(out)}")
        return out

    def has(self, ref: str) -> bool:
        return self.run(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"])[0] == 0

    # the clone

    def prepare(self) -> None:
        repo = self.repo
        if repo.exists() and not repo.is_dir():
            raise MirrorError(f"the mirror clone path {repo} is not a folder")
        if not repo.exists() or not any(repo.iterdir()):
            self.clone()
        else:
            self.check_repository()
            self.recover()
        self.set_origin()
        self.on_branch()

    def clone(self) -> None:
        repo = self.repo
        existed = repo.exists()
        try:
            code, out = self.git.run(["clone", "-q", "--", self.remote, str(repo)], repo.parent)
        except _Failed:
            # a killed clone leaves a partial .git behind: put back the missing or empty folder it found
            if existed:
                for child in repo.iterdir():
                    _clear(child)
            else:
                shutil.rmtree(repo, ignore_errors=True)
            raise
        if code == 0:
            return
        # an unreachable (or not yet created) remote: start empty; the push delivers everything once it answers
        self.git.note(f"clone failed ({_why(out)}); starting an empty repository")
        repo.mkdir(parents=True, exist_ok=True)
        self.must(["init", "-q", "-b", self.branch])

    def check_repository(self) -> None:
        code, out = self.run(["rev-parse", "--show-toplevel"]) if (self.repo / ".git").is_dir() else (1, "")
        if code != 0 or Path(out.strip()).resolve() != self.repo:
            raise MirrorError(f"the mirror clone path {self.repo} is not empty and not a git repository")

    def recover(self) -> None:
        """Undo what a call killed by a timeout left behind; this call holds the clone's lock."""
        dot_git = self.repo / ".git"
        if (dot_git / "rebase-merge").exists() or (dot_git / "rebase-apply").exists():
            self.git.note("a rebase was left in progress; aborting it")
            self.run(["rebase", "--abort"])
        lock = dot_git / "index.lock"
        if lock.exists():
            self.git.note("removed a stale .git/index.lock")
            lock.unlink()

    def set_origin(self) -> None:
        code, out = self.run(["remote", "get-url", "origin"])
        if code != 0:
            self.must(["remote", "add", "origin", self.remote])
        elif out.strip() != self.remote:
            self.must(["remote", "set-url", "origin", self.remote])

    def on_branch(self) -> None:
        code, out = self.run(["symbolic-ref", "-q", "--short", "HEAD"])
        if code == 0 and out.strip() == self.branch:
            return
        if not self.has("HEAD"):
            self.must(["symbolic-ref", "HEAD", f"refs/heads/{self.branch}"])
        elif self.has(f"refs/heads/{self.branch}"):
            self.must(["checkout", "-q", self.branch])
        elif self.has(f"refs/remotes/origin/{self.branch}"):
            self.must(["checkout", "-q", "-b", self.branch, f"refs/remotes/origin/{self.branch}"])
        else:
            self.must(["checkout", "-q", "-b", self.branch])

    # the copy and the commit

    def copy(self, bag: Path, latest: dict[str, Path]) -> list[str]:
        """Make runs/<bag>/ an exact copy of the bag and latest/ hold the given files; the paths touched."""
        files = _bag_files(bag, self.git)
        dest = _folder(self.repo, (RUNS, bag.name))
        for rel, source in files.items():
            folder = _folder(dest, rel.parts[:-1])
            target = folder / rel.name
            if target.is_symlink() or (target.exists() and not target.is_file()):
                _clear(target)
            shutil.copyfile(source, target)
        stale = 0
        for dirpath, dirnames, filenames in os.walk(dest):
            folder = Path(dirpath)
            for name in [*filenames, *(d for d in dirnames if (folder / d).is_symlink())]:
                if (folder / name).relative_to(dest) not in files:
                    (folder / name).unlink()
                    stale += 1
        if stale:
            self.git.note(f"removed {stale} file(s) from {RUNS}/{bag.name}/ that the bag no longer holds")
        self.git.note(f"copied {len(files)} file(s) of the bag to {RUNS}/{bag.name}/")
        for name, source in latest.items():
            source = Path(source)
            if not _PLAIN_NAME.match(name):
                self.git.note(f"refused latest name {name!r}: not a plain file name")
                continue
            if not source.is_file():
                self.git.note(f"{LATEST}/{name}: {source} is missing; skipped")
                continue
            target = _folder(self.repo, (LATEST,)) / name
            if target.is_symlink() or (target.exists() and not target.is_file()):
                _clear(target)
            shutil.copyfile(source, target)
            self.git.note(f"copied {source} to {LATEST}/{name}")
        # all of runs/: a call killed after its copy left files that this commit takes along
        return [RUNS, LATEST] if (self.repo / LATEST).is_dir() else [RUNS]

    def commit_changes(self, paths: list[str], message: str) -> None:
        self.must(["add", "-A", "--", *paths])
        code, _ = self.run(["diff", "--cached", "--quiet"])
        if code == 0:
            self.git.note("nothing changed; no commit")
            return
        if code != 1:
            raise _Failed(f"git diff failed (exit {code})")
        commit = [*self.identity, "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-m", message]
        self.must(commit)
        self.commit = self.must(["rev-parse", "HEAD"]).strip()

    # the push

    def remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def find_unpushed(self) -> list[str]:
        ref = self.remote_ref()
        span = [f"{ref}..HEAD"] if self.has(ref) else ["HEAD"]
        return self.must(["rev-list", "--reverse", *span]).split()

    def push(self) -> MirrorResult:
        shown = shown_remote(self.remote)
        code, out = self.run(["fetch", "-q", "origin"])
        if code != 0:
            self.git.note(f"fetch failed ({_why(out)}); pushing with what is known of origin")
        if not self.has("HEAD"):
            return self.result(False, False, [], "nothing to mirror: no commit and nothing to commit")
        ref = self.remote_ref()
        if self.has(ref):
            code, out = self.run(["merge-base", "--is-ancestor", ref, "HEAD"])
            if code == 1:
                self.rebase()
            elif code != 0:
                raise _Failed(f"git merge-base failed (exit {code}): {_why(out)}")
        self.unpushed = self.find_unpushed()
        code, out = self.run(["push", "-q", "origin", f"HEAD:refs/heads/{self.branch}"])
        if code != 0:
            kept = f"; {_commits(len(self.unpushed))} kept locally ({_short(self.unpushed)})" if self.unpushed else ""
            return self.result(False, False, [], f"push to {shown} failed: {_why(out)}{kept}")
        delivered = self.unpushed
        self.unpushed = []
        rebased = f" (rebased onto origin/{self.branch})" if self.rebased else ""
        if delivered:
            message = f"pushed {_commits(len(delivered))} ({_short(delivered)}) to {shown}{rebased}"
        else:
            head = self.must(["rev-parse", "HEAD"]).strip()
            message = f"nothing new; {shown} is up to date at {head[:SHORT]}"
        return self.result(True, True, delivered, message)

    def rebase(self) -> None:
        """Put our local commits on top of what the remote got meanwhile; `theirs` is ours in a rebase."""
        ref = self.remote_ref()
        args = [*self.identity, "-c", "commit.gpgsign=false", "rebase", "-q", "-X", "theirs", ref]
        code, out = self.run(args)
        if code != 0:
            self.run(["rebase", "--abort"])
            raise _Failed(f"rebase onto origin/{self.branch} failed: {_why(out)}")
        self.rebased = True
        if self.commit:
            # the rebase rewrote our commit; an empty one (the remote already had the change) was dropped
            mine = self.find_unpushed()
            self.commit = mine[-1] if mine else ""

    def result(self, ok: bool, pushed: bool, delivered: list[str], message: str) -> MirrorResult:
        return MirrorResult(
            ok=ok,
            commit=self.commit,
            pushed=pushed,
            pushed_commits=delivered,
            unpushed=list(self.unpushed or []),
            message=self.git.mask(message),
            log="\n".join(self.git.lines),
        )

    def failed(self, why: str) -> MirrorResult:
        if self.unpushed is None and (self.repo / ".git").is_dir() and self.git.exe is not None:
            try:
                self.unpushed = self.find_unpushed() if self.has("HEAD") else []
            except _Failed:
                self.unpushed = [self.commit] if self.commit else []
        kept = f"; {_commits(len(self.unpushed))} kept locally" if self.unpushed else ""
        return self.result(False, False, [], f"mirror to {shown_remote(self.remote)} failed: {why}{kept}")


def mirror(
    bag_folder: Path,
    latest: dict[str, Path],
    message: str,
    *,
    repo: Path,
    remote: str,
    branch: str = "main",
    author: str = "VX11 Ops Portal <portal@localhost>",
    timeout: float = 60,
    env: dict | None = None,
) -> MirrorResult:
    """Copy `bag_folder` to runs/<its name>/ and `latest` (name under latest/ -> source file) into the clone at
    `repo`, commit with `message` when something changed, and push to `remote`'s `branch` (see the module's doc).
    MirrorError for bad configuration only; every other failure is a result with ok False."""
    http = _check_remote(remote)
    identity = _parse_author(author)
    if not _BRANCH.match(branch or ""):
        raise MirrorError(f"the mirror branch {branch!r} is not a valid branch name")
    repo = Path(repo).resolve()
    if repo.parent == repo:
        raise MirrorError("the mirror clone path cannot be the filesystem root")
    try:
        repo.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MirrorError(f"cannot use {repo}: {exc}") from exc
    child_env, token = _child_env(repo, http, env)
    exe = shutil.which("git", path=child_env.get("PATH", os.defpath))
    git = _Git(exe, child_env, timeout, remote, token)
    work = _Mirror(git, repo, remote, branch, identity)
    bag = Path(bag_folder)
    if bag.is_symlink() or not bag.is_dir():
        return work.failed(f"the bag folder {bag} is missing, not a folder, or a symlink")
    bag = bag.resolve()
    if bag.name in ("", ".git"):
        return work.failed(f"the bag folder {bag} cannot be mirrored under its name")
    if exe is None:
        git.lines.append("git is not installed (not found on PATH)")
        return work.failed("git is not installed (not found on PATH)")
    try:
        with _repo_lock(repo, timeout):
            work.prepare()
            paths = work.copy(bag, latest or {})
            work.commit_changes(paths, message.strip() or f"mirror {bag.name}")
            return work.push()
    except _Failed as exc:
        return work.failed(str(exc))
    except OSError as exc:
        return work.failed(f"copying into {repo}: {exc}")
