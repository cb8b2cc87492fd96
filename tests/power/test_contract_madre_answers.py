"""Contract: madre's power answers, as the real VX11 madre gives them and its repository's tests read them.

madre answers `{status, apply, service, action, plan, executed, out_dir, timestamp}` with `status` "ok" (done),
"plan" (only planned) or "error"; its plain `POST /madre/power/service/start|stop {"service"}` answers
`{status, service, executed, out_dir}` and its mode `{status, mode, plan|executed, out_dir}`. With
VX11_ALLOW_SERVICE_CONTROL off, applying to a service of its allowlist is 403 before anything else; a name
outside it is 404. `GET /madre/power/status` carries `status` and `services`, a list. The portal keeps its own
fields beside madre's (OURS) and the HTTP code as `http_status`; a refusal is `{"detail"}`, an action that ran
and failed is 502 with the whole answer and its `detail`. Actions run on demo modules as real OS processes.
"""

import re
from datetime import UTC
from pathlib import Path

import pytest

from apps.fleet.reference import REFERENCE_MODULES
from apps.power.backends import pid_alive
from apps.power.models import PowerAction
from tests.power.helpers import offset_time, post, serving

REAL = {"status", "service", "action", "apply", "plan", "executed", "out_dir", "timestamp"}
REAL_PLAIN = {"status", "service", "executed", "out_dir"}  # POST /madre/power/service/start|stop {"service"}
REAL_MODE = {"status", "mode", "plan", "executed", "out_dir"}
OURS = {"id", "http_status", "applied", "result", "message", "actor", "at", "duration_ms", "output"}
OURS_MODE = {"steps"}
COMMAND_STEP = {"step", "cmd", "rc", "ok", "elapsed_ms"}  # a command the backend ran (compose, systemd)
PROCESS_START = {"step", "cmd", "rc", "pid", "ok", "elapsed_ms"}
PROCESS_STOP = {"step", "pid", "how", "ok", "elapsed_ms"}
MADRE_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")  # UTC to the second, with its offset


def assert_stamped(body: dict) -> None:
    assert MADRE_STAMP.match(body["timestamp"]), body["timestamp"]
    assert offset_time(body["timestamp"]).utcoffset() == UTC.utcoffset(None)
    assert offset_time(body["at"]) <= offset_time(body["timestamp"]).replace(microsecond=999999)


def test_a_plan(power_on, power_api, demo_process):
    control = demo_process("switch")
    r = post(power_api, "/madre/power/service/switch/start")
    assert r.status_code == 200, r.content
    body = r.json()
    assert set(body) == REAL | OURS
    assert (body["status"], body["http_status"], body["apply"], body["applied"]) == ("plan", 200, False, False)
    assert (body["service"], body["action"], body["executed"], body["result"]) == ("switch", "start", [], "ok")
    assert body["plan"]["steps"][0] == f"run {' '.join(control.command)}"
    assert Path(body["out_dir"]).is_dir()
    assert Path(body["out_dir"]).name.startswith("madre_power_start_switch_")
    assert_stamped(body)
    assert not serving(control.module.health_url)  # a plan runs nothing


def test_applied_start_and_stop_on_a_real_process(power_on, power_api, demo_process, window):
    control = demo_process("switch")
    window("switch")

    r = post(power_api, "/madre/power/service/switch/start", {"apply": True})
    assert r.status_code == 200, r.content
    started = r.json()
    assert set(started) == REAL | OURS
    assert (started["status"], started["http_status"], started["apply"], started["applied"]) == ("ok", 200, True, True)
    control.refresh_from_db()
    assert pid_alive(control.pid)
    [step] = started["executed"]
    assert set(step) == PROCESS_START
    assert (step["step"], step["cmd"], step["rc"], step["pid"], step["ok"]) == (
        "start",
        control.command,
        None,
        control.pid,
        True,
    )
    assert step["elapsed_ms"] > 0
    assert_stamped(started)

    # madre's plain stop: applied at once
    r = post(power_api, "/madre/power/service/stop", {"service": "switch"})
    assert r.status_code == 200, r.content
    stopped = r.json()
    assert REAL_PLAIN <= set(stopped)
    assert set(stopped) == REAL | OURS
    assert (stopped["status"], stopped["service"], stopped["action"], stopped["apply"]) == (
        "ok",
        "switch",
        "stop",
        True,
    )
    [step] = stopped["executed"]
    assert set(step) == PROCESS_STOP
    assert (step["step"], step["pid"], step["how"], step["ok"]) == (
        "stop",
        started["executed"][0]["pid"],
        "ended on SIGTERM",
        True,
    )
    assert not serving(control.module.health_url)
    assert Path(stopped["out_dir"]).name.startswith("madre_power_stop_switch_")

    # madre's plain start, then again: nothing to do is no step
    first = post(power_api, "/madre/power/service/start", {"service": "switch"}).json()
    again = post(power_api, "/madre/power/service/start", {"service": "switch"}).json()
    assert (first["status"], len(first["executed"])) == ("ok", 1)
    assert set(again) == REAL | OURS
    assert (again["status"], again["executed"]) == ("ok", [])
    assert "already running" in again["message"]
    # what was answered is what was stored
    row = PowerAction.objects.get(id=stopped["id"])
    assert (row.executed, row.apply, row.evidence_path) == (stopped["executed"], True, stopped["out_dir"])


def test_a_restart_runs_both_halves(power_on, power_api, demo_process, window):
    demo_process("hermes", grace=1.0)
    window("hermes")
    assert post(power_api, "/madre/power/service/hermes/start", {"apply": True}).status_code == 200
    body = post(power_api, "/madre/power/service/hermes/restart", {"apply": True}).json()
    assert body["status"] == "ok"
    assert [(s["step"], s["ok"]) for s in body["executed"]] == [("stop", True), ("start", True)]
    assert [set(s) for s in body["executed"]] == [PROCESS_STOP, PROCESS_START]


def test_a_failed_action_is_an_error(power_on, power_api, demo_process, window):
    control = demo_process("hermes")
    control.command = [control.command[0], "-c", "import sys; sys.exit(3)"]
    control.save()
    window("hermes")
    r = post(power_api, "/madre/power/service/hermes/start", {"apply": True})
    assert r.status_code == 502
    body = r.json()
    assert set(body) == REAL | OURS | {"detail"}
    assert (body["status"], body["http_status"], body["result"], body["apply"], body["applied"]) == (
        "error",
        502,
        "error",
        True,
        True,
    )
    assert body["detail"] == body["message"]
    assert "exited with 3" in body["detail"]
    [step] = body["executed"]
    assert (step["step"], step["rc"], step["ok"]) == ("start", 3, False)
    assert_stamped(body)


def test_a_command_backend_step_is_the_command_it_ran(power_on, power_api, compose_switch, window):
    window("switch")
    body = post(power_api, "/madre/power/service/start", {"service": "switch"}).json()
    assert body["status"] == "ok"
    [step] = body["executed"]
    assert set(step) == COMMAND_STEP
    assert (step["step"], step["cmd"], step["rc"], step["ok"]) == (
        "run",
        ["docker", "compose", "-p", "vx11", "up", "-d", "switch"],
        0,
        True,
    )
    compose_switch.path.write_text(compose_switch.path.read_text().replace("sys.exit(0)", "sys.exit(1)"))
    failed = post(power_api, "/madre/power/service/stop", {"service": "switch"})
    assert failed.status_code == 502
    assert (failed.json()["status"], failed.json()["executed"][0]["rc"]) == ("error", 1)


def test_mode_answers(power_on, power_api, compose_switch, window):
    window("switch")
    plan = post(power_api, "/madre/power/mode", {"mode": "full"})
    assert plan.status_code == 200, plan.content
    assert set(plan.json()) == REAL | OURS | REAL_MODE | OURS_MODE
    assert (plan.json()["status"], plan.json()["mode"], plan.json()["executed"]) == ("plan", "full", [])
    assert compose_switch.calls() == []

    done = post(power_api, "/madre/power/mode", {"mode": "full", "apply": True})
    assert done.status_code == 200, done.content
    body = done.json()
    assert set(body) == REAL | OURS | REAL_MODE | OURS_MODE
    assert (body["status"], body["apply"], body["applied"]) == ("ok", True, True)
    assert [(s["service"], s["status"]) for s in body["steps"]] == [("switch", "ok")]
    assert [(s["service"], s["step"], s["cmd"][-1]) for s in body["executed"]] == [("switch", "run", "switch")]
    assert_stamped(body)


@pytest.mark.parametrize("slug", [m["slug"] for m in REFERENCE_MODULES])
def test_service_control_off_is_403_before_any_other_guard(power_on, power_api, fleet, slug):
    """Every module of the fleet (madre's allowlist), controlled or not, stoppable or not."""
    power_on.VX11_ALLOW_SERVICE_CONTROL = False
    for path, body in [
        ("/madre/power/service/start", {"service": slug}),
        ("/madre/power/service/stop", {"service": slug}),
        (f"/madre/power/service/{slug}/restart", {"apply": True}),
    ]:
        r = post(power_api, path, body)
        assert r.status_code == 403, (path, r.content)
        assert set(r.json()) == {"detail"}
        assert "VX11_ALLOW_SERVICE_CONTROL" in r.json()["detail"]
    assert PowerAction.objects.filter(service=slug, result="refused", http_status=403).count() == 3


def test_unknown_service_is_404_and_a_plan_is_not_applying(power_on, power_api, fleet):
    power_on.VX11_ALLOW_SERVICE_CONTROL = False
    r = post(power_api, "/madre/power/service/start", {"service": "nope"})
    assert (r.status_code, r.json()) == (404, {"detail": "unknown service 'nope': not a module of the fleet"})
    # a plan is not refused by the switch: a module without a backend still says so
    r = post(power_api, "/madre/power/service/hermes/start")
    assert r.status_code == 404
    assert "no control backend" in r.json()["detail"]


def test_status_is_ok_with_a_list_of_services(power_on, power_api, fleet):
    body = power_api.get("/madre/power/status").json()
    assert body["status"] == "ok"
    assert isinstance(body["services"], list)
    assert {s["service"] for s in body["services"]} == {m["slug"] for m in REFERENCE_MODULES}


def test_the_api_prefix_answers_the_same(power_on, power_api, compose_switch):
    body = post(power_api, "/api/power/service/switch/stop").json()
    assert set(body) == REAL | OURS
    assert body["status"] == "plan"
