"""madre's power-window contract, against demo modules running as real processes (the process backend):
POST /madre/power/window/open and /close, GET /madre/power/state (also under /api/), with the keys madre
answers plus the portal's. Opening starts what is not running; closing a ttl window, or its expiry, stops
exactly what it started; a hold window leaves it running."""

from datetime import timedelta

import pytest

from apps.power.backends import pid_alive
from apps.power.models import PowerAction
from apps.power.tasks import check_power_windows
from tests.power.helpers import offset_time, post, serving

# what real madre answers
OPEN = {"window_id", "created_at", "deadline", "services_started", "state", "ttl_remaining_sec"}
CLOSE = {"window_id", "closed_at", "services_stopped", "state"}
STATE_OPEN = {
    "state",
    "window_id",
    "created_at",
    "deadline",
    "services",
    "mode",
    "ttl_remaining_sec",
    "services_started",
}
# the portal's: the audited action row (PowerAction.as_dict), the window, what else happened to each service
ACTION_ROW = {
    "id",
    "status",
    "http_status",
    "service",
    "action",
    "apply",
    "applied",
    "result",
    "message",
    "plan",
    "executed",
    "actor",
    "at",
    "timestamp",
    "duration_ms",
    "output",
    "out_dir",
}
OURS_OPEN = ACTION_ROW | {
    "window",
    "services_already_running",
    "services_not_startable",
    "services_start_failed",
    "steps",
}
OURS_CLOSE = ACTION_ROW | {"window", "services_not_stopped", "services_left_running", "steps"}
NO_BACKEND = "no control backend configured (add a Service control in the admin)"


def open_window(client, services, ttl_sec=600, mode="ttl"):
    r = post(client, "/madre/power/window/open", {"services": services, "ttl_sec": ttl_sec, "mode": mode})
    assert r.status_code == 200, r.content
    return r.json()


def close_window(client):
    r = post(client, "/madre/power/window/close")
    assert r.status_code == 200, r.content
    return r.json()


def test_open_starts_a_stopped_module_and_close_stops_it(power_on, power_api, demo_process):
    hermes = demo_process("hermes", grace=1.0)
    assert not serving(hermes.module.health_url)

    body = open_window(power_api, ["mcp", "hermes"], ttl_sec=600)
    assert set(body) == OPEN | OURS_OPEN
    assert body["state"] == "open"
    assert body["services_started"] == ["hermes"]
    assert body["services_not_startable"] == [{"service": "mcp", "reason": NO_BACKEND}]
    assert (body["services_already_running"], body["services_start_failed"]) == ([], [])
    assert serving(hermes.module.health_url)
    created, deadline = offset_time(body["created_at"]), offset_time(body["deadline"])
    assert deadline - created == timedelta(seconds=600)
    assert isinstance(body["ttl_remaining_sec"], int)
    assert 595 <= body["ttl_remaining_sec"] <= 600
    assert body["window_id"] == body["window"]["id"]
    [step] = body["steps"]
    start = PowerAction.objects.get(action="start")
    assert (step["id"], step["service"], step["result"], start.parent_id) == (start.id, "hermes", "ok", body["id"])
    assert start.evidence_path
    assert body["executed"] and {ran["service"] for ran in body["executed"]} == {"hermes"}  # what the start ran

    for path in ("/madre/power/state", "/api/power/state"):
        state = power_api.get(path)
        assert state.status_code == 200
        assert set(state.json()) == STATE_OPEN
        assert state.json() == {
            "state": "open",
            "window_id": body["window_id"],
            "created_at": body["created_at"],
            "deadline": body["deadline"],
            "services": ["hermes", "mcp"],
            "mode": "ttl",
            "ttl_remaining_sec": state.json()["ttl_remaining_sec"],
            "services_started": ["hermes"],
        }
        assert 590 <= state.json()["ttl_remaining_sec"] <= 600

    closed = close_window(power_api)
    assert set(closed) == CLOSE | OURS_CLOSE
    assert (closed["window_id"], closed["state"], closed["services_stopped"]) == (
        body["window_id"],
        "closed",
        ["hermes"],
    )
    assert offset_time(closed["closed_at"]) >= created
    assert (closed["services_not_stopped"], closed["services_left_running"]) == ([], [])
    assert not serving(hermes.module.health_url)
    stop = PowerAction.objects.get(action="stop")
    assert (stop.result, stop.parent_id, closed["steps"][0]["id"]) == ("ok", closed["id"], stop.id)

    for path in ("/madre/power/state", "/api/power/state"):
        assert power_api.get(path).json() == {"state": "closed"}
    assert post(power_api, "/madre/power/window/close").status_code == 404


def test_hold_keeps_what_it_started_running(power_on, power_api, demo_process):
    hermes = demo_process("hermes")
    body = open_window(power_api, ["hermes"], mode="hold")
    assert body["services_started"] == ["hermes"]
    assert power_api.get("/madre/power/state").json()["mode"] == "hold"
    closed = close_window(power_api)
    assert set(closed) == CLOSE | OURS_CLOSE
    assert (closed["services_stopped"], closed["services_left_running"]) == ([], ["hermes"])
    assert serving(hermes.module.health_url)
    assert not PowerAction.objects.filter(action="stop").exists()


def test_a_module_running_before_the_window_is_not_stopped(power_on, power_api, demo_process, window):
    hermes, switch = demo_process("hermes", grace=1.0), demo_process("switch", grace=1.0)
    window("switch")  # a maintenance window lets switch be started before the power window
    assert post(power_api, "/madre/power/service/switch/start", {"apply": True}).status_code == 200
    assert serving(switch.module.health_url)

    body = open_window(power_api, ["hermes", "switch"])
    assert (body["services_started"], body["services_already_running"]) == (["hermes"], ["switch"])
    assert power_api.get("/madre/power/state").json()["services_started"] == ["hermes"]
    closed = close_window(power_api)
    assert closed["services_stopped"] == ["hermes"]
    assert not serving(hermes.module.health_url)
    assert serving(switch.module.health_url)


def test_ttl_expiry_stops_what_it_started(power_on, power_api, demo_process):
    """The ttl is judged at the time the checker is given (no waiting): the window stays open on the clock."""
    hermes = demo_process("hermes", grace=1.0)
    body = open_window(power_api, ["hermes", "madre"], ttl_sec=600)
    assert body["services_started"] == ["hermes"]
    assert body["services_not_startable"] == [{"service": "madre", "reason": NO_BACKEND}]
    hermes.refresh_from_db()
    pid = hermes.pid
    deadline = offset_time(body["deadline"])

    assert check_power_windows(now=deadline - timedelta(seconds=1)) == {"stopped": [], "failed": []}
    assert serving(hermes.module.health_url)
    assert check_power_windows(now=deadline + timedelta(milliseconds=50)) == {"stopped": ["hermes"], "failed": []}
    assert not pid_alive(pid)
    assert not serving(hermes.module.health_url)
    assert check_power_windows(now=deadline + timedelta(hours=1)) == {"stopped": [], "failed": []}


@pytest.mark.parametrize("services", [["hermes"], ["madre", "tentaculo_link"]])
def test_modules_without_a_backend_are_listed_not_startable(power_on, power_api, fleet, services):
    body = open_window(power_api, services)
    assert body["services_started"] == []
    assert body["services_not_startable"] == [{"service": s, "reason": NO_BACKEND} for s in services]
    assert power_api.get("/madre/power/state").json()["services"] == services
    assert close_window(power_api)["services_stopped"] == []
