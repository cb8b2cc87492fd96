"""How a service is started and stopped: process, docker compose or systemd.

Every command is an argument list (never a shell) with a timeout. Each function returns a
`BackendResult` (ok, one-line message, output text, the steps it ran); none raises for an expected failure.
A step (`executed`, madre's name) is {"step", "ok", "elapsed_ms"} plus what it ran: `cmd` (the argument list)
and `rc` (its exit code, None when it did not exit), `pid` for a process started or signalled and `how` a
signalled one ended. Nothing to do (already running, not running) is no step.

The process backend owns the module's OS process: it starts the command in its own session,
records the pid (the caller stores it), stops it with SIGTERM then SIGKILL after a grace period,
and waits for the module's /health to come up or go away.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from django.conf import settings

from vx11_site import display, outbound

OUTPUT_TAIL = 4000  # characters of output kept on the row; output.log in the evidence folder has it all
POLL = 0.05

# Popen objects of the children this process started, so they are reaped (no zombies) when they end.
_children: dict[int, subprocess.Popen] = {}


@dataclass
class BackendResult:
    ok: bool
    message: str
    output: list[str] = field(default_factory=list)
    pid: int | None = None  # process backend: the pid now running (None = none)
    executed: list[dict] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.output)


def step(name: str, ok: bool, started: float, **ran) -> dict:
    """One entry of BackendResult.executed; `started` is the time.monotonic() the step began."""
    return {"step": name, **ran, "ok": ok, "elapsed_ms": round((time.monotonic() - started) * 1000, 1)}


# --- external commands: docker compose, systemctl ----------------------------------------------


def run_argv(argv: list[str], timeout: float | None = None) -> BackendResult:
    """Run one argument list; ok when it exits 0 within the timeout."""
    timeout = settings.VX11_POWER_COMMAND_TIMEOUT if timeout is None else timeout
    exe = shutil.which(argv[0])
    shown = " ".join(argv)
    if exe is None:
        return BackendResult(False, f"{argv[0]!r} not found on PATH", [f"$ {shown}", f"{argv[0]}: not found"])
    started = time.monotonic()
    try:
        done = subprocess.run(
            [exe, *argv[1:]], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        return BackendResult(
            False,
            f"`{shown}` timed out after {timeout:g} s",
            [f"$ {shown}", str(exc.stdout or ""), str(exc.stderr or "")],
            executed=[step("run", False, started, cmd=argv, rc=None)],
        )
    output = [f"$ {shown}", done.stdout.rstrip(), done.stderr.rstrip(), f"exit code {done.returncode}"]
    executed = [step("run", done.returncode == 0, started, cmd=argv, rc=done.returncode)]
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        return BackendResult(
            False, f"`{shown}` exited with {done.returncode}: {last[0][:200]}", output, executed=executed
        )
    return BackendResult(True, f"`{shown}` ok", output, executed=executed)


COMPOSE_VERBS = {"start": ["up", "-d"], "stop": ["stop"], "restart": ["restart"]}
SYSTEMD_VERBS = {"start": "start", "stop": "stop", "restart": "restart"}


def compose_argv(service: str, action: str) -> list[str]:
    return ["docker", "compose", "-p", settings.VX11_COMPOSE_PROJECT, *COMPOSE_VERBS[action], service]


def systemd_argv(unit: str, action: str) -> list[str]:
    return ["systemctl", SYSTEMD_VERBS[action], unit]


# --- asking a backend whether a service runs (GET /madre/power/status) --------------------------

STATUS_TIMEOUT = 5.0  # seconds per question at most (status asks every module; a hung tool must not hang it)
SYSTEMD_RUNNING = {"active", "reloading", "refreshing"}
SYSTEMD_NOT_RUNNING = {"inactive", "failed", "activating", "deactivating", "maintenance"}


@dataclass
class ProcessState:
    running: bool | None  # None: not known (the error says why)
    state: str = ""  # what the backend said: "active", "running", "no running container", ...
    error: str | None = None


def ask(argv: list[str], timeout: float | None = None) -> tuple[subprocess.CompletedProcess[str] | None, str | None]:
    """Run one argument list for its answer (any exit code): (the finished process, None) or (None, why not)."""
    timeout = min(settings.VX11_POWER_COMMAND_TIMEOUT, STATUS_TIMEOUT) if timeout is None else timeout
    shown = " ".join(argv)
    exe = shutil.which(argv[0])
    if exe is None:
        return None, f"{argv[0]!r} not found on PATH"
    try:
        return subprocess.run(
            [exe, *argv[1:]], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        ), None
    except subprocess.TimeoutExpired:
        return None, f"`{shown}` timed out after {timeout:g} s"
    except OSError as exc:
        return None, f"`{shown}`: {exc}"


def _failed(argv: list[str], done: subprocess.CompletedProcess[str]) -> str:
    last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
    return f"`{' '.join(argv)}` exited with {done.returncode}: {last[0][:200]}"


def compose_ps_argv(service: str) -> list[str]:
    return ["docker", "compose", "-p", settings.VX11_COMPOSE_PROJECT, "ps", "--format", "json", service]


def parse_compose_ps(text: str) -> list[dict]:
    """`docker compose ps --format json`: one JSON object per line (compose >= 2.21) or one JSON array (older)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        containers = json.loads(text)
    else:
        containers = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
        raise ValueError("not a list of containers")
    return containers


def compose_state(service: str) -> ProcessState:
    argv = compose_ps_argv(service)
    done, error = ask(argv)
    if done is None:
        return ProcessState(None, error=error)
    if done.returncode != 0:
        return ProcessState(None, error=_failed(argv, done))
    try:
        containers = [c for c in parse_compose_ps(done.stdout) if c.get("Service", service) == service]
    except ValueError as exc:
        return ProcessState(None, error=f"`{' '.join(argv)}`: unreadable answer ({str(exc)[:200]})")
    states = sorted({str(c.get("State", "?")) for c in containers})
    return ProcessState(
        any(c.get("State") == "running" for c in containers), ", ".join(states) or "no running container"
    )


def systemd_state_argv(unit: str) -> list[str]:
    return ["systemctl", "is-active", unit]


def systemd_state(unit: str) -> ProcessState:
    """`systemctl is-active` exits non-zero for anything but active, so its word is what counts."""
    argv = systemd_state_argv(unit)
    done, error = ask(argv)
    if done is None:
        return ProcessState(None, error=error)
    word = (done.stdout.strip().splitlines() or [""])[0].strip()
    if word in SYSTEMD_RUNNING:
        return ProcessState(True, word)
    if word in SYSTEMD_NOT_RUNNING:
        return ProcessState(False, word)
    return ProcessState(None, word, _failed(argv, done) if done.returncode else f"`{' '.join(argv)}` answered {word!r}")


# --- the process backend ---------------------------------------------------------------------


def pid_alive(pid: int | None, argv: list[str] | None = None) -> bool:
    """Whether `pid` runs (not a zombie) and, where /proc tells, runs `argv` (guards pid reuse)."""
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours: never signal it
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            if argv is not None and len(argv) > 1:
                cmdline = proc.joinpath("cmdline").read_bytes().split(b"\0")[:-1]
                if cmdline[-(len(argv) - 1) :] != [str(a).encode() for a in argv[1:]]:
                    return False  # the pid was reused by another program
        except (OSError, IndexError):
            return False
    return True


def health_answers(url: str) -> bool:
    try:
        with outbound.client(timeout=0.5) as client:
            return client.get(url).status_code < 500
    except httpx.HTTPError:
        return False


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def log_path(slug: str) -> Path:
    folder = settings.VAR_DIR / "power"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{slug}.log"


def read_tail(path: Path, limit: int = 2000) -> str:
    """The last `limit` characters of a file, reading only its end (a module's log may be large)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 4 * limit))  # up to 4 bytes a character in UTF-8
            return display.tail(f.read().decode(errors="replace"), limit)
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def trim_log(path: Path, max_bytes: int | None = None) -> bool:
    """Beyond `max_bytes`, cut the log to its last half, in place (copytruncate: a module still writing
    with O_APPEND carries on at the new end). True when it was cut."""
    max_bytes = settings.VX11_POWER_LOG_MAX_BYTES if max_bytes is None else max_bytes
    try:
        with path.open("r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size <= max_bytes:
                return False
            f.seek(size - max_bytes // 2)
            kept = f.read()
            nl = kept.find(b"\n")
            kept = kept[nl + 1 :] if 0 <= nl < len(kept) - 1 else kept  # start at a whole line
            f.seek(0)
            f.write(b"[log cut: older output dropped, VX11_POWER_LOG_MAX_BYTES]\n" + kept)
            f.truncate()  # at the end of what was just written
            return True
    except FileNotFoundError:
        return False


def trim_logs() -> int:
    """Every module log under var/power/ (the hourly prune calls this, so a long-running module's log stays bounded)."""
    folder = settings.VAR_DIR / "power"
    return sum(trim_log(p) for p in folder.glob("*.log")) if folder.is_dir() else 0


def process_start(
    slug: str, argv: list[str], pid: int | None, health_url: str, timeout: float | None = None
) -> BackendResult:
    timeout = settings.VX11_POWER_HEALTH_TIMEOUT if timeout is None else timeout
    if pid_alive(pid, argv):
        return BackendResult(True, f"{slug} already running (pid {pid})", [f"pid {pid} alive; nothing to do"], pid=pid)
    if health_answers(health_url):
        return BackendResult(
            False,
            f"{health_url} already answers, but not from a process the portal started; not starting a second copy",
            [f"recorded pid {pid} is not running", f"{health_url} answers"],
        )
    log = log_path(slug)
    trim_log(log)
    started = time.monotonic()
    try:
        with log.open("ab") as out:
            child = subprocess.Popen(
                argv,
                cwd=settings.BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        return BackendResult(
            False,
            f"cannot start {slug}: {exc}",
            [f"$ {' '.join(argv)}", str(exc)],
            executed=[step("start", False, started, cmd=argv, rc=None)],
        )
    _children[child.pid] = child
    output = [f"$ {' '.join(argv)}", f"pid {child.pid}, log {log}"]
    up = wait_for(lambda: child.poll() is not None or health_answers(health_url), timeout)
    if child.poll() is not None:
        output.append(read_tail(log, 2000))
        executed = [step("start", False, started, cmd=argv, rc=child.returncode, pid=child.pid)]
        return BackendResult(
            False, f"{slug} exited with {child.returncode} before {health_url} answered", output, executed=executed
        )
    if not up:
        executed = [step("start", False, started, cmd=argv, rc=None, pid=child.pid)]
        stopping = time.monotonic()
        how = terminate(child.pid, 1.0)
        executed.append(step("stop", True, stopping, pid=child.pid, how=how))
        output.append(read_tail(log, 2000))
        return BackendResult(
            False,
            f"{slug}: {health_url} did not answer within {timeout:g} s; process stopped again",
            output,
            executed=executed,
        )
    output.append(f"{health_url} answered after {time.monotonic() - started:.2f} s")
    executed = [step("start", True, started, cmd=argv, rc=None, pid=child.pid)]
    return BackendResult(True, f"{slug} started (pid {child.pid})", output, pid=child.pid, executed=executed)


def terminate(pid: int, grace: float) -> str:
    """SIGTERM the process group, SIGKILL after `grace` seconds; say which it took."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "already gone"
    if wait_for(lambda: not pid_alive(pid), grace):
        return "ended on SIGTERM"
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "ended on SIGTERM"
    wait_for(lambda: not pid_alive(pid), 5.0)
    return f"killed (SIGKILL after {grace:g} s)"


def process_stop(
    slug: str, argv: list[str], pid: int | None, health_url: str, grace: float, timeout: float | None = None
) -> BackendResult:
    timeout = settings.VX11_POWER_HEALTH_TIMEOUT if timeout is None else timeout
    if pid is None or not pid_alive(pid, argv):
        note = f" (but {health_url} answers: is it running outside the portal?)" if health_answers(health_url) else ""
        return BackendResult(
            True, f"{slug} not running{note}", [f"no live process (recorded pid {pid}){note}"], pid=None
        )
    started = time.monotonic()
    how = terminate(pid, grace)
    output = [f"pid {pid}: {how}"]
    if not wait_for(lambda: not health_answers(health_url), timeout):
        output.append(f"{health_url} still answers")
        return BackendResult(
            False,
            f"{slug}: pid {pid} {how}, but {health_url} still answers after {timeout:g} s",
            output,
            pid=None,
            executed=[step("stop", False, started, pid=pid, how=how)],
        )
    output.append(f"{health_url} no longer answers")
    return BackendResult(
        True,
        f"{slug} stopped (pid {pid} {how})",
        output,
        pid=None,
        executed=[step("stop", True, started, pid=pid, how=how)],
    )
