"""The pipeline's test world: git remotes on tmp_path for the mirror (bare repositories, a loopback HTTP server that
records headers, one that never answers), small bags and latest files, a tidy managed tree and a fully owned
target for a clean run, and runs as the workers leave them for the faces (API, admin, CLI)."""

import contextlib
import http.server
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import bagit
from django.conf import settings
from django.utils import timezone

from apps.pipeline import runner
from apps.pipeline.models import PhaseRun, PipelineRun
from apps.pipeline.phases import BY_NUMBER

GIT_ENV = {
    "GIT_AUTHOR_NAME": "VX11 tests",
    "GIT_AUTHOR_EMAIL": "tests@vx11.invalid",
    "GIT_COMMITTER_NAME": "VX11 tests",
    "GIT_COMMITTER_EMAIL": "tests@vx11.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
}


# --- git remotes and what they hold ----------------------------------------------------------------


def git(*args: str, cwd: Path | None = None) -> str:
    """git's output; a failure raises (a test's own git commands must work)."""
    return subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def bare_remote(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", "-b", "main", str(path), cwd=path.parent)
    return path


def files_on(remote: Path) -> set[str]:
    return set(git("ls-tree", "-r", "--name-only", "main", cwd=remote).splitlines())


def text_on(remote: Path, path: str) -> str:
    return git("show", f"main:{path}", cwd=remote)


def is_ancestor(remote: Path, commit: str) -> bool:
    found = subprocess.run(
        ["git", "merge-base", "--is-ancestor", commit, "main"], cwd=remote, capture_output=True, check=False, timeout=60
    )
    return found.returncode == 0


def push_from_elsewhere(remote: Path, folder: Path, change) -> str:
    """Another clone of `remote` changes it (`change(folder)`), commits and pushes; returns its commit."""
    git("clone", "-q", str(remote), str(folder), cwd=folder.parent)
    change(folder)
    git("add", "-A", cwd=folder)
    git("commit", "-q", "--no-verify", "--no-gpg-sign", "-m", "pushed from elsewhere", cwd=folder)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=folder)
    return git("rev-parse", "HEAD", cwd=folder).strip()


def tiny_bag(folder: Path, n: int) -> Path:
    """A valid BagIt bag named as a run's (20260101T00000nZ_autonomy_pipeline_n) with a file or two of its own."""
    bag = folder / f"20260101T{n:06d}Z_autonomy_pipeline_{n}"
    bag.mkdir(parents=True)
    (bag / "run.json").write_text(json.dumps({"run": n}) + "\n")
    (bag / "EVIDENCE_INDEX.md").write_text(f"## run {n}\n")
    bagit.make_bag(str(bag), checksums=["sha256"])
    return bag


def latest_files(folder: Path, n: int) -> dict[str, Path]:
    """PERCENTAGES.json and SCORECARD.json, each {"version": n}."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in ("PERCENTAGES.json", "SCORECARD.json"):
        files[name] = folder / name
        files[name].write_text(json.dumps({"version": n}) + "\n")
    return files


@contextlib.contextmanager
def header_recorder():
    """A loopback HTTP server that answers 404 to everything and records each request's Authorization header;
    yields (a remote URL on it, the list of headers seen)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self):
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mirror.git", seen
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_remote():
    """A loopback port that accepts connections and never answers; yields a remote URL on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/mirror.git"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        listener.close()


# --- a clean fleet: a tidy tree and a target whose every table has an owner -------------------------


def tidy_tree(root: Path) -> Path:
    """The demo tree with nothing for the audit or housekeeping to find: no strays, no extra top-level folder,
    no old audit folder, the two newest backups only, everything committed."""
    from apps.simfleet.target_tree import EXTRA_ROOT, STRAYS, create_target_tree, git_commit

    create_target_tree(root, git=False)
    for relative in (*STRAYS, EXTRA_ROOT):
        target = root / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    audits = sorted(p for p in (root / "docs" / "audit").iterdir() if p.is_dir())
    for old in audits[:-1]:
        shutil.rmtree(old)
    for old in sorted((root / "data" / "backups").iterdir())[:-2]:
        old.unlink()
    git_commit(root)
    return root


def own_every_table(target: Path) -> None:
    """An ownership rule (to madre) for each table of the target that has none."""
    from apps.audits.models import OwnershipRule
    from apps.fleet.models import Module

    madre = Module.objects.get(slug="madre")
    conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    finally:
        conn.close()
    for name in names:
        if not name.startswith("sqlite_"):
            OwnershipRule.objects.get_or_create(pattern=name, defaults={"module": madre, "note": "tests"})


# --- runs as the workers leave them (the faces' tests: no phase does its real work) -----------------


def stage(run: PipelineRun, number: int, files: dict[str, str]) -> list[str]:
    """Write a phase's evidence files where a worker stages them; returns their paths relative to the root."""
    root = Path(settings.VX11_EVIDENCE_ROOT)
    folder = runner.staging(run) / BY_NUMBER[number].folder
    paths = []
    for name, text in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        paths.append(target.relative_to(root).as_posix())
    return paths


def ended_run(status: str = PipelineRun.Status.OK, trigger: str = "api", user=None) -> PipelineRun:
    """A run whose seven phases ran (phase n took n seconds), phase 1 with two files, then ended as `status`."""
    run = runner.start(trigger, user=user)
    start = timezone.now() - timedelta(minutes=5)
    run.mark_running(start)
    at = start
    for phase in run.phase_runs.all():
        phase.status, phase.started_at = PhaseRun.Status.OK, at
        at = phase.ended_at = at + timedelta(seconds=phase.number)
        phase.summary, phase.progress = f"phase {phase.number} went fine", 100.0
        if phase.number == 1:
            phase.evidence = stage(run, 1, {"audit.json": '{"ok": true}\n', "audit_bag/notes.txt": "two\n"})
        phase.save()
    PipelineRun.objects.filter(pk=run.pk).update(verdict="OPERATIONAL")
    run.verdict = "OPERATIONAL"
    run.end(status, at)
    return run


def running_run(user=None) -> PipelineRun:
    """A run a worker is in: phase 1 ended with findings (one file), phase 2 running, the rest pending."""
    run = runner.start("api", user=user)
    now = timezone.now()
    run.mark_running(now - timedelta(seconds=30))
    one = run.phase_runs.get(number=1)
    one.status, one.started_at, one.ended_at = PhaseRun.Status.FINDINGS, now - timedelta(seconds=30), now
    one.summary, one.evidence = "1 finding", stage(run, 1, {"audit.json": "{}\n"})
    one.save()
    run.phase_runs.get(number=2).claim(now)
    return run
