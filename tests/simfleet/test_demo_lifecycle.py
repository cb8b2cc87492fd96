"""The whole `vx11 demo` as a newcomer runs it: the welcome block last, children's logs in var/log/, the CLI
finding the running demo through var/demo.json, a dead worker started again, and SIGTERM to the process
group ending every process the demo started (its power-managed mcp included) in whatever order it lands."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.simfleet.sim import CONTROL_PORT, PORTS
from tests.helpers import ROOT, free_demo_offset, free_port


def _state(pid: int) -> str | None:
    """The kernel's state letter of a process, None when there is none (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if state in ("Z", "X") else state


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout:g} s")


def _manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_demo_supervises_its_children_and_sigterm_ends_them_all(tmp_path):
    offset = free_demo_offset()
    portal_port = free_port()
    unwanted = (
        "REDIS_URL",
        "DATABASE_URL",
        "VX11_ALLOW_SERVICE_CONTROL",
        "PYTHONUNBUFFERED",
    )  # the demo flushes itself
    env = {k: v for k, v in os.environ.items() if k not in unwanted}
    env.update(DJANGO_SETTINGS_MODULE="vx11_site.settings", VX11_VAR_DIR=str(tmp_path))
    argv = [
        sys.executable,
        "manage.py",
        "vx11",
        "demo",
        "--port-offset",
        str(offset),
        "--portal-port",
        str(portal_port),
        "--shub-warmup",
        "0",
    ]
    terminal = tmp_path / "terminal.txt"
    with terminal.open("w") as out:
        demo = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(
            lambda: "Ctrl-C stops everything" in terminal.read_text() or demo.poll() is not None,
            120,
            "the demo printed no welcome block",
        )
        assert demo.poll() is None, terminal.read_text()
        state = json.loads((tmp_path / "demo.json").read_text())

        lines = terminal.read_text().splitlines()
        welcome = lines[[n for n, line in enumerate(lines) if line.startswith("VX11 Ops Portal:")][-1] :]
        labels = [line.split(":")[0].strip() for line in welcome[1:-1]]
        assert labels == [
            "login",
            "API docs",
            "Operator console",
            "X-VX11-Token",
            "Power console",
            "Pipeline",
            "Misbehave",
            "Logs",
        ]
        assert (tmp_path / "mirror-remote.git" / "HEAD").is_file()  # the pipeline's mirror has a remote to push to
        assert welcome[-1] == "Ctrl-C stops everything."
        assert "celery@" not in terminal.read_text()  # the worker's banner went to its log file
        _wait_for(
            lambda: "vx11sqla+sqlite" in (tmp_path / "log" / "worker.log").read_text(),
            30,
            "the worker's log shows no embedded SQLite broker",
        )
        assert state["control_url"] == f"http://127.0.0.1:{CONTROL_PORT + offset}"

        sim = _manage(env, "vx11", "sim", "hermes", "down")  # no --control-url: read from var/demo.json
        assert sim.stdout.strip() == f"hermes (port {PORTS['hermes'] + offset}) is now down [simulated]", sim.stderr
        status = _manage(env, "vx11", "power", "status")
        assert f"DISABLED here, ON for the running demo (pid {demo.pid})" in status.stdout, status.stderr

        first_worker = state["children"]["worker"]
        os.kill(first_worker, signal.SIGKILL)
        restarted = _wait_for(
            lambda: (
                json.loads((tmp_path / "demo.json").read_text())["restarts"]["worker"] == 1
                and json.loads((tmp_path / "demo.json").read_text())
            ),
            30,
            "the dead worker was not started again",
        )
        assert restarted["children"]["worker"] != first_worker
        assert _state(restarted["children"]["worker"]) is not None
        assert "worker exited with code -9; started again" in (tmp_path / "log" / "demo.log").read_text()
        mcp_pid = restarted["powered_pids"]["mcp"]
        assert _state(mcp_pid) is not None

        # children first (as a group signal may reach them before the demo), then the demo, then the group again
        # while the demo is cleaning up
        for pid in restarted["children"].values():
            os.kill(pid, signal.SIGTERM)
        os.kill(demo.pid, signal.SIGTERM)
        _wait_for(lambda: "stopping the demo" in terminal.read_text(), 30, "the demo did not start stopping")
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=90)
    finally:
        if demo.poll() is None:  # a failed assertion above: SIGTERM first, so the demo stops mcp (its own session)
            os.killpg(demo.pid, signal.SIGTERM)
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
    _wait_for(
        lambda: not _group_members(demo.pid),
        30,
        f"processes of the demo's group outlived it: {_group_members(demo.pid)}",
    )
    assert _state(mcp_pid) is None, f"mcp (pid {mcp_pid}) outlived the demo"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", PORTS["mcp"] + offset), timeout=1).close()
    assert not (tmp_path / "demo.json").exists()
