"""`vx11 demo`: bad options are a clear error line, and --fleet-only points the registry at the simulator."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.simfleet.sim import PORTS
from tests.helpers import ROOT, free_demo_offset


@pytest.mark.django_db
def test_port_offset_out_of_range_is_refused():
    with pytest.raises(CommandError, match="--port-offset"):
        call_command("vx11_demo", port_offset=99999, fleet_only=True)


@pytest.mark.django_db
def test_unknown_power_module_is_refused():
    with pytest.raises(CommandError, match="--power-modules: unknown module\\(s\\) nope"):
        call_command("vx11_demo", power_modules="mcp,nope", fleet_only=True)


def test_fleet_only_demo_serves_and_registers_the_simulator(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "vx11_site.settings", "VX11_VAR_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    offset = free_demo_offset()
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "vx11",
            "demo",
            "--fleet-only",
            "--port-offset",
            str(offset),
            "--shub-warmup",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("First probe round"):
                break
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)
    rest, _ = proc.communicate(timeout=5) if proc.poll() is not None else ("", None)
    out = "".join(lines)
    assert "Demo fleet (SIMULATOR) is up" in out
    assert f"http://127.0.0.1:{PORTS['madre'] + offset}/health" in out
    # mcp (8006) is no simulated socket but its own process, started through the power manager
    assert (
        f"mcp              http://127.0.0.1:{PORTS['mcp'] + offset}/health  own process, power manager: mcp started"
        in out
    )
    assert "First probe round: 10/10 answering." in out
    assert "mcp: mcp stopped" in rest  # the demo stops its power modules on the way out
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", PORTS["mcp"] + offset), timeout=1).close()
    check = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from apps.fleet.models import Module; "
            f"print(Module.objects.filter(simulated=True, port__gte={8000 + offset}).count())",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.stdout.strip().splitlines()[-1] == "10"
    actions = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from apps.power.models import PowerAction as P; "
            "print(list(P.objects.order_by('id').values_list('actor', 'action', 'service', 'result')))",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert actions.stdout.strip().splitlines()[-1] == "[('demo', 'start', 'mcp', 'ok'), ('demo', 'stop', 'mcp', 'ok')]"
