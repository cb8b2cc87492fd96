"""compose and systemd backends: the exact argument lists, checked with recording stand-ins on PATH."""

import pytest

from apps.power.models import PowerAction, ServiceControl
from tests.power.helpers import post


@pytest.fixture
def in_window(power_on, fleet, window):
    window("switch", "hermes")


def test_compose_arguments(power_on, power_api, fleet, in_window, stand_in):
    docker = stand_in("docker")
    ServiceControl.objects.create(module=fleet["switch"], backend="compose")
    ServiceControl.objects.create(module=fleet["hermes"], backend="compose", compose_service="switch-hermes")
    power_on.VX11_COMPOSE_PROJECT = "vx11"
    assert post(power_api, "/madre/power/service/start", {"service": "switch"}).status_code == 200
    assert post(power_api, "/madre/power/service/stop", {"service": "switch"}).status_code == 200
    r = post(power_api, "/madre/power/service/hermes/restart", {"apply": True})
    assert r.status_code == 200, r.content
    assert docker.calls() == [
        ["compose", "-p", "vx11", "up", "-d", "switch"],
        ["compose", "-p", "vx11", "stop", "switch"],
        ["compose", "-p", "vx11", "restart", "switch-hermes"],
    ]
    assert "stand-in docker ran compose -p vx11 restart switch-hermes" in r.json()["output"]
    plan = post(power_api, "/madre/power/service/switch/start").json()["plan"]
    assert plan["steps"] == ["docker compose -p vx11 up -d switch"]


def test_systemd_arguments(power_on, power_api, fleet, in_window, stand_in):
    systemctl = stand_in("systemctl")
    ServiceControl.objects.create(module=fleet["switch"], backend="systemd", systemd_unit="vx11-switch.service")
    for action in ("start", "stop", "restart"):
        assert post(power_api, f"/madre/power/service/switch/{action}", {"apply": True}).status_code == 200
    assert systemctl.calls() == [
        ["start", "vx11-switch.service"],
        ["stop", "vx11-switch.service"],
        ["restart", "vx11-switch.service"],
    ]


def test_failing_command_is_a_502_error(power_on, power_api, fleet, in_window, stand_in, evidence):
    docker = stand_in("docker", exit_code=1)
    ServiceControl.objects.create(module=fleet["switch"], backend="compose")
    r = post(power_api, "/madre/power/service/start", {"service": "switch"})
    assert r.status_code == 502
    assert "exited with 1" in r.json()["detail"]
    assert len(docker.calls()) == 1
    row = PowerAction.objects.get()
    assert row.result == "error"
    assert row.applied
    assert "exit code 1" in (evidence()[0] / "data" / "output.log").read_text()


def test_missing_executable(power_on, power_api, fleet, in_window, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker anywhere
    ServiceControl.objects.create(module=fleet["switch"], backend="compose")
    r = post(power_api, "/madre/power/service/start", {"service": "switch"})
    assert r.status_code == 502
    assert "not found on PATH" in r.json()["detail"]


def test_command_timeout(power_on, power_api, fleet, in_window, stand_in):
    slow = stand_in("systemctl")
    slow.path.write_text(slow.path.read_text().replace("sys.exit(0)", "import time; time.sleep(5)"))
    power_on.VX11_POWER_COMMAND_TIMEOUT = 0.5
    ServiceControl.objects.create(module=fleet["switch"], backend="systemd", systemd_unit="vx11-switch.service")
    r = post(power_api, "/madre/power/service/switch/restart", {"apply": True})
    assert r.status_code == 502
    assert "timed out after 0.5 s" in r.json()["detail"]
