"""GET /madre/power/status asks compose and systemd whether their modules run (recording stand-ins on PATH).

A failing, hung or missing tool gives `running: null` and an `error` note, never a 500.
"""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.fleet.models import Module
from apps.power.manager import power_status
from apps.power.models import ServiceControl

RUNNING = {"Name": "vx11t-switch-1", "Service": "switch", "State": "running", "Health": ""}


@pytest.fixture
def controls(power_on, fleet):
    power_on.VX11_COMPOSE_PROJECT = "vx11t"
    make = ServiceControl.objects.create
    make(module=fleet["switch"], backend="compose")
    make(module=fleet["hermes"], backend="compose", compose_service="hermes-svc")
    make(module=fleet["mcp"], backend="compose")
    make(module=fleet["spawner"], backend="systemd", systemd_unit="vx11-spawner.service")
    make(module=fleet["hormiguero"], backend="systemd", systemd_unit="vx11-hormiguero.service")
    make(module=fleet["manifestator"], backend="systemd", systemd_unit="vx11-manifestator.service")


def services(client) -> dict:
    r = client.get("/madre/power/status")
    assert r.status_code == 200, r.content
    return {s["service"]: s for s in r.json()["services"]}


def test_compose_and_systemd_are_asked(power_api, controls, stand_in):
    docker = stand_in(
        "docker",
        replies={
            "switch": (
                json.dumps(RUNNING)
                + "\n"
                + json.dumps({**RUNNING, "Name": "vx11t-switch-2", "State": "exited"})
                + "\n",
                0,
            ),
            "hermes-svc": ("[]", 0),  # older compose: one JSON array; empty = no running container
            "mcp": ("", 1),
        },
    )
    systemctl = stand_in(
        "systemctl",
        replies={
            "vx11-spawner.service": ("active\n", 0),
            "vx11-hormiguero.service": ("inactive\n", 3),  # is-active exits 3 for a stopped unit
            "vx11-manifestator.service": ("", 4),
        },
    )
    got = services(power_api)

    assert sorted(docker.calls()) == [
        ["compose", "-p", "vx11t", "ps", "--format", "json", s] for s in ("hermes-svc", "mcp", "switch")
    ]
    assert sorted(systemctl.calls()) == [
        ["is-active", f"vx11-{s}.service"] for s in ("hormiguero", "manifestator", "spawner")
    ]

    assert (got["switch"]["running"], got["switch"]["backend_state"], got["switch"]["error"]) == (
        True,
        "exited, running",
        None,
    )
    assert (got["hermes"]["running"], got["hermes"]["backend_state"], got["hermes"]["error"]) == (
        False,
        "no running container",
        None,
    )
    assert got["mcp"]["running"] is None
    assert "exited with 1" in got["mcp"]["error"]
    assert (got["spawner"]["running"], got["spawner"]["backend_state"], got["spawner"]["error"]) == (
        True,
        "active",
        None,
    )
    assert (got["hormiguero"]["running"], got["hormiguero"]["backend_state"], got["hormiguero"]["error"]) == (
        False,
        "inactive",
        None,
    )
    assert got["manifestator"]["running"] is None
    assert "exited with 4" in got["manifestator"]["error"]
    assert got["madre"]["running"] is None
    assert got["madre"]["controlled"] is False
    assert got["madre"]["error"] is None


def test_unreadable_compose_answer(power_api, controls, stand_in):
    stand_in("docker", replies={"switch": ("this is not json\n", 0)})
    stand_in("systemctl")
    got = services(power_api)
    assert got["switch"]["running"] is None
    assert "unreadable answer" in got["switch"]["error"]


def test_missing_tools(power_api, controls, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither docker nor systemctl anywhere
    got = services(power_api)
    assert got["switch"]["running"] is None
    assert "'docker' not found on PATH" in got["switch"]["error"]
    assert got["spawner"]["running"] is None
    assert "'systemctl' not found on PATH" in got["spawner"]["error"]


def test_hung_tool_times_out(power_on, power_api, controls, stand_in):
    stand_in("docker", replies=dict.fromkeys(("switch", "hermes-svc", "mcp"), ("[]", 0)))
    slow = stand_in("systemctl")
    slow.path.write_text(slow.path.read_text().replace("import json, sys", "import json, sys, time; time.sleep(5)"))
    power_on.VX11_POWER_COMMAND_TIMEOUT = 0.5
    got = services(power_api)
    assert got["spawner"]["running"] is None
    assert "timed out after 0.5 s" in got["spawner"]["error"]
    assert got["switch"]["running"] is False


def test_in_window_is_one_query_whatever_the_number_of_modules(power_on, fleet, window):
    def queries() -> tuple[int, dict]:
        with CaptureQueriesContext(connection) as ctx:
            status = power_status()
        return len(ctx.captured_queries), {s["service"]: s["in_window"] for s in status["services"]}

    window("switch", "hermes")
    before, in_window = queries()
    assert sorted(s for s, inside in in_window.items() if inside) == ["hermes", "switch"]
    extra = [
        Module.objects.create(slug=f"extra{i}", name=f"extra {i}", base_url=f"http://127.0.0.1:{20000 + i}")
        for i in range(20)
    ]
    window(*[m.slug for m in extra[:10]])
    after, in_window = queries()
    assert after == before
    assert sum(in_window.values()) == 12
    assert in_window["extra3"]
    assert not in_window["extra15"]
