"""Start, stop and restart a demo module as a real OS process; plans; evidence; the bus; status."""

import json

import httpx

from apps.events.models import Event
from apps.power.backends import pid_alive
from apps.power.models import PowerAction, ServiceControl


def health(control: ServiceControl) -> bool:
    try:
        return httpx.get(control.module.health_url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_plan_only_unless_applied(power_on, power_api, demo_process):
    control = demo_process("switch")
    r = power_api.post("/madre/power/service/switch/start", {}, content_type="application/json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["applied"] is False
    assert body["result"] == "ok"
    assert body["plan"]["backend"] == "process"
    assert body["plan"]["steps"][0].startswith("run ")
    assert "apply" in body["message"]
    assert not health(control)  # nothing ran
    # no body at all is a plan too
    assert (
        power_api.post("/madre/power/service/switch/restart", content_type="application/json").json()["applied"]
        is False
    )


def test_start_stop_restart_real_process(power_on, power_api, demo_process, window, evidence):
    control = demo_process("switch")
    window("switch")

    r = power_api.post("/madre/power/service/switch/start", {"apply": True}, content_type="application/json")
    assert r.status_code == 200, r.content
    assert r.json()["applied"] is True
    assert r.json()["result"] == "ok"
    control.refresh_from_db()
    first_pid = control.pid
    assert pid_alive(first_pid)
    assert health(control)
    assert httpx.get(control.module.health_url).json()["module"] == "switch"

    status = power_api.get("/madre/power/status").json()
    row = next(s for s in status["services"] if s["service"] == "switch")
    assert row["running"] is True
    assert row["pid"] == first_pid
    assert row["in_window"] is True

    # starting again is a no-op on the same process
    again = power_api.post("/madre/power/service/start", {"service": "switch"}, content_type="application/json")
    assert again.status_code == 200
    assert "already running" in again.json()["message"]

    r = power_api.post("/madre/power/service/switch/restart", {"apply": True}, content_type="application/json")
    assert r.status_code == 200, r.content
    control.refresh_from_db()
    assert control.pid != first_pid
    assert not pid_alive(first_pid)
    assert health(control)

    r = power_api.post("/madre/power/service/stop", {"service": "switch"}, content_type="application/json")
    assert r.status_code == 200, r.content
    assert "ended on SIGTERM" in r.json()["message"]
    control.refresh_from_db()
    assert control.pid is None
    assert not health(control)

    # every request is a row with an evidence folder holding plan, result and output
    rows = list(PowerAction.objects.order_by("id"))
    assert [(a.action, a.applied, a.result) for a in rows] == [
        ("start", True, "ok"),
        ("start", True, "ok"),
        ("restart", True, "ok"),
        ("stop", True, "ok"),
    ]
    folders = evidence()
    assert len(folders) == 4
    assert {f.name.rsplit("_", 1)[0] for f in folders} >= {"madre_power_start_switch", "madre_power_stop_switch"}
    stop_dir = next(f for f in folders if f.name.startswith("madre_power_stop_switch"))
    assert json.loads((stop_dir / "data" / "result.json").read_text())["result"] == "ok"
    assert json.loads((stop_dir / "data" / "plan.json").read_text())["action"] == "stop"
    assert "SIGTERM" in (stop_dir / "data" / "output.log").read_text()
    assert rows[-1].evidence_path == str(stop_dir)

    # applied actions are announced on the bus
    events = [e.data for e in Event.objects.filter(type="status_changed") if "power_action" in e.data]
    assert [(e["module"], e["power_action"]) for e in events] == [
        ("switch", "start"),
        ("switch", "start"),
        ("switch", "restart"),
        ("switch", "stop"),
    ]


def test_sigkill_after_grace(power_on, power_api, demo_process, window, tmp_path):
    """A process that ignores SIGTERM is killed after the grace period."""
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sys.argv = ['serve_one', *sys.argv[1:]]\nfrom apps.simfleet.serve_one import main\n"
        "import aiohttp.web_runner\n"  # run_app re-installs SIGTERM handling; undo it once it has started
        "orig = aiohttp.web_runner.BaseRunner.setup\n"
        "async def setup(self, *a, **k):\n    await orig(self, *a, **k)\n    import asyncio\n"
        "    asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "aiohttp.web_runner.BaseRunner.setup = setup\nmain()\n"
    )
    control = demo_process("hermes", grace=0.5)
    control.command = [control.command[0], str(stubborn), *control.command[3:]]
    control.save()
    window("hermes")
    assert (
        power_api.post(
            "/madre/power/service/hermes/start", {"apply": True}, content_type="application/json"
        ).status_code
        == 200
    )
    r = power_api.post("/madre/power/service/hermes/stop", {"apply": True}, content_type="application/json")
    assert r.status_code == 200, r.content
    assert "SIGKILL after 0.5 s" in r.json()["message"]
    assert not health(control)


def test_start_failure_is_an_audited_error(power_on, power_api, demo_process, window):
    control = demo_process("hermes")
    control.command = [control.command[0], "-c", "import sys; print('no such module here'); sys.exit(3)"]
    control.save()
    window("hermes")
    r = power_api.post("/madre/power/service/hermes/start", {"apply": True}, content_type="application/json")
    assert r.status_code == 502
    assert "exited with 3" in r.json()["detail"]
    row = PowerAction.objects.get()
    assert row.result == "error"
    assert row.applied
    assert "no such module here" in row.output


def test_no_second_copy_beside_a_foreign_process(power_on, power_api, fleet, window):
    """mcp answers from the shared simulator, not from a process the portal started: start refuses."""
    import sys

    ServiceControl.objects.create(
        module=fleet["mcp"], backend="process", command=[sys.executable, "-m", "apps.simfleet.serve_one", "mcp"]
    )
    window("mcp")
    r = power_api.post("/madre/power/service/mcp/start", {"apply": True}, content_type="application/json")
    assert r.status_code == 502
    assert "already answers" in r.json()["detail"]
    r = power_api.post("/madre/power/service/mcp/stop", {"apply": True}, content_type="application/json")
    assert r.status_code == 200
    assert "running outside the portal" in r.json()["message"]
