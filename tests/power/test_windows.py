"""Power windows: open (starting what is not running), one at a time, close; a ttl window stops what it started
when it is closed or expires, retrying a refused or failed stop. madre's answer shapes: test_contract_windows.py."""

import json
import sys
from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.fleet.models import MaintenanceWindow
from apps.power.backends import pid_alive
from apps.power.manager import NEVER_STOP, expire_windows
from apps.power.models import PowerAction, ServiceControl, WindowStop
from apps.power.tasks import check_power_windows
from tests.power.helpers import post, serving

NO_BACKEND = "no control backend configured (add a Service control in the admin)"


def test_open_one_at_a_time_and_close(power_on, power_api, fleet):
    r = post(
        power_api,
        "/madre/power/window/open",
        {"services": ["switch", "hermes"], "ttl_sec": 300, "mode": "hold", "reason": "upgrade"},
    )
    assert r.status_code == 200, r.content
    body = r.json()
    w = body["window"]
    assert w["services"] == ["hermes", "switch"]
    assert w["mode"] == "hold"
    assert 299 <= w["ttl_left_sec"] <= 300
    assert (body["window_id"], body["state"], body["services_started"]) == (w["id"], "open", [])
    # neither has a control backend: listed, and the window opens all the same
    assert body["services_not_startable"] == [
        {"service": "hermes", "reason": NO_BACKEND},
        {"service": "switch", "reason": NO_BACKEND},
    ]
    assert body["message"] == f"power window #{w['id']} open for 300 s (hold); not startable: hermes, switch"
    window = MaintenanceWindow.objects.get(id=w["id"])
    assert window.source == "power"
    assert window.created_by.username == "controller"
    assert MaintenanceWindow.module_in_window(fleet["switch"], timezone.now())  # fleet state: also mutes notifications

    second = post(power_api, "/madre/power/window/open", {"services": ["mcp"], "ttl_sec": 60})
    assert second.status_code == 409
    assert f"#{window.id} is already open" in second.json()["detail"]

    assert power_api.get("/madre/power/status").json()["window"]["id"] == window.id
    r = post(power_api, "/madre/power/window/close")
    assert r.status_code == 200
    assert r.json()["window"]["closed_at"] == r.json()["closed_at"]
    assert (r.json()["state"], r.json()["services_stopped"]) == ("closed", [])
    assert not MaintenanceWindow.module_in_window(fleet["switch"], timezone.now())
    assert power_api.get("/madre/power/status").json()["window"] is None
    assert post(power_api, "/madre/power/window/close").status_code == 404
    # a new one may open now
    assert post(power_api, "/madre/power/window/open", {"services": ["mcp"], "ttl_sec": 60}).status_code == 200
    assert list(PowerAction.objects.order_by("id").values_list("action", "result")) == [
        ("window_open", "ok"),
        ("window_open", "refused"),
        ("window_close", "ok"),
        ("window_close", "refused"),
        ("window_open", "ok"),
    ]


def test_service_outside_fleet_422(power_on, power_api, fleet):
    r = post(power_api, "/madre/power/window/open", {"services": ["switch", "ghost"], "ttl_sec": 30})
    assert r.status_code == 422
    assert "ghost" in r.json()["detail"]
    assert not MaintenanceWindow.objects.exists()
    assert PowerAction.objects.get().http_status == 422


def test_ttl_expiry_stops_the_process(power_on, power_api, demo_process):
    """Expiry is judged at times given to the checker, never by waiting: the start needs the window open on the
    real clock, so a ttl long enough for a slow start keeps it open until the checker is told the ttl has passed."""
    control = demo_process("hermes", grace=1.0)
    body = {"services": ["hermes", "madre"], "ttl_sec": 600, "reason": "short job"}
    r = post(power_api, "/madre/power/window/open", body)
    assert r.status_code == 200
    assert r.json()["services_started"] == ["hermes"]  # the window started it
    control.refresh_from_db()
    pid = control.pid
    assert pid_alive(pid)
    assert serving(control.module.health_url)
    start = PowerAction.objects.get(action="start")
    assert (start.parent.action, start.result, start.actor, start.user.username) == (
        "window_open",
        "ok",
        "controller",
        "controller",
    )
    assert r.json()["steps"][0]["id"] == start.id
    # a start asked for inside the window finds it running: nothing to do, and the window still stops it later
    assert post(power_api, "/madre/power/service/hermes/start", {"apply": True}).status_code == 200
    control.refresh_from_db()
    assert control.pid == pid

    ends_at = MaintenanceWindow.objects.get().ends_at
    assert check_power_windows() == {"stopped": [], "failed": []}  # not expired yet
    assert check_power_windows(now=ends_at - timedelta(seconds=1)) == {"stopped": [], "failed": []}
    assert pid_alive(pid)
    expired = ends_at + timedelta(milliseconds=50)
    assert check_power_windows(now=expired) == {"stopped": ["hermes"], "failed": []}  # madre is never stopped

    assert not pid_alive(pid)
    assert not serving(control.module.health_url)
    stop = PowerAction.objects.get(action="stop")
    assert stop.applied
    assert stop.result == "ok"
    assert stop.actor == f"window #{MaintenanceWindow.objects.get().id} expiry (try 1)"
    assert stop.user.username == "controller"
    assert expire_windows(now=ends_at + timedelta(hours=1)) == []  # each window once, however late the next check


def test_hold_windows_and_windows_that_started_nothing_stop_nothing(power_on, power_api, demo_process, fleet):
    control = demo_process("hermes")
    r = post(power_api, "/madre/power/window/open", {"services": ["hermes"], "ttl_sec": 60, "mode": "hold"})
    assert r.json()["services_started"] == ["hermes"]
    later = timezone.now() + timedelta(seconds=120)
    assert expire_windows(later) == []
    now = timezone.now()
    ttl = MaintenanceWindow.objects.create(
        source="power",
        mode="ttl",
        starts_at=now - timedelta(seconds=10),
        ends_at=now - timedelta(seconds=5),
        closed_at=now - timedelta(seconds=6),
    )
    ttl.modules.set([fleet["hermes"]])
    assert expire_windows() == []
    assert serving(control.module.health_url)
    assert WindowStop.objects.get().state == "kept"


def test_checker_scheduled_by_migration(db):
    task = PeriodicTask.objects.get(task="apps.power.tasks.check_power_windows")
    assert task.enabled
    assert task.interval.every <= 5
    assert task.interval.period == "seconds"
    assert PeriodicTask.objects.filter(task="apps.power.tasks.prune_power_actions").exists()


def expired_window(user, *modules) -> MaintenanceWindow:
    """A ttl power window that has ended, having started `modules` as open_window records it."""
    now = timezone.now()
    w = MaintenanceWindow.objects.create(
        source="power",
        mode="ttl",
        starts_at=now - timedelta(seconds=10),
        ends_at=now - timedelta(seconds=1),
        created_by=user,
    )
    w.modules.set(modules)
    for module in modules:
        state = "kept" if module.slug in NEVER_STOP else "pending"
        WindowStop.objects.create(window=w, module=module, state=state, started_at=w.starts_at, retry_at=w.ends_at)
    return w


def test_busy_module_at_expiry_is_stopped_on_the_next_tick(power_on, controller, fleet, compose_switch):
    """The stop at expiry is refused (another action holds the module): the window stays unhandled and the
    next tick stops it; each try is an audited row."""
    power_on.VX11_POWER_WINDOW_RETRY_SECONDS = 0
    w = expired_window(controller, fleet["switch"], fleet["madre"])
    control = ServiceControl.objects.get(module=fleet["switch"])
    assert control.claim("restart by someone")

    assert check_power_windows() == {"stopped": [], "failed": ["switch"]}
    assert compose_switch.calls() == []
    w.refresh_from_db()
    assert w.expired_handled_at is None
    control.release()

    assert check_power_windows() == {"stopped": ["switch"], "failed": []}
    assert [c[-2:] for c in compose_switch.calls()] == [["stop", "switch"]]
    w.refresh_from_db()
    assert w.expired_handled_at is not None
    assert check_power_windows() == {"stopped": [], "failed": []}  # done: nothing more
    rows = PowerAction.objects.filter(action="stop").order_by("id")
    assert [(r.result, r.http_status, r.actor) for r in rows] == [
        ("refused", 409, f"window #{w.id} expiry (try 1)"),
        ("ok", 200, f"window #{w.id} expiry (try 2)"),
    ]
    assert WindowStop.objects.get(window=w, module=fleet["switch"]).state == "done"
    assert WindowStop.objects.get(window=w, module=fleet["madre"]).state == "kept"  # never stopped


def test_failing_stop_retried_after_the_delay_then_given_up(power_on, controller, fleet, stand_in):
    power_on.VX11_POWER_WINDOW_RETRY_SECONDS = 30
    power_on.VX11_POWER_WINDOW_STOP_ATTEMPTS = 2
    docker = stand_in("docker", exit_code=1)
    ServiceControl.objects.create(module=fleet["switch"], backend="compose")
    w = expired_window(controller, fleet["switch"])

    assert expire_windows()[0].result == "error"
    assert expire_windows() == []  # not before the retry delay
    assert [a.result for a in expire_windows(timezone.now() + timedelta(seconds=31))] == ["error"]
    stop = WindowStop.objects.get(window=w)
    assert (stop.state, stop.attempts) == ("gave_up", 2)
    w.refresh_from_db()
    assert w.expired_handled_at is not None  # given up counts as handled
    assert expire_windows(timezone.now() + timedelta(seconds=300)) == []
    assert len(docker.calls()) == 2 == PowerAction.objects.filter(action="stop", result="error").count()
    expired_window(controller, fleet["hermes"])
    MaintenanceWindow.objects.filter(pk=w.pk).update(
        starts_at=w.starts_at - timedelta(days=400), ends_at=w.ends_at - timedelta(days=400)
    )
    assert WindowStop.prune() == 1  # the old window's row goes
    assert WindowStop.objects.get().module.slug == "hermes"


def test_task_stops_one_module_per_tick(power_on, controller, fleet, stand_in):
    """A window of many modules is worked off one stop per call, so the task's time limit is one stop's worst case."""
    docker = stand_in("docker")
    for slug in ("switch", "hermes"):
        ServiceControl.objects.create(module=fleet[slug], backend="compose")
    w = expired_window(controller, fleet["switch"], fleet["hermes"])
    assert check_power_windows() == {"stopped": ["hermes"], "failed": []}
    w.refresh_from_db()
    assert w.expired_handled_at is None
    assert check_power_windows() == {"stopped": ["switch"], "failed": []}
    w.refresh_from_db()
    assert w.expired_handled_at is not None
    assert len(docker.calls()) == 2
    assert (
        check_power_windows.soft_time_limit >= 300 + power_on.VX11_POWER_HEALTH_TIMEOUT
    )  # longest grace + /health wait


def test_service_control_off_still_opens_the_window_and_lists_what_it_did_not_start(power_on, power_api, demo_process):
    """Starting is an applied action, refused while VX11_ALLOW_SERVICE_CONTROL is off; the window itself is a
    maintenance window (it mutes notifications), so it opens and says which services it could not start."""
    power_on.VX11_ALLOW_SERVICE_CONTROL = False
    control = demo_process("hermes")
    r = post(power_api, "/madre/power/window/open", {"services": ["hermes"], "ttl_sec": 60})
    assert r.status_code == 200, r.content
    assert r.json()["services_started"] == []
    assert r.json()["services_not_startable"] == [
        {"service": "hermes", "reason": "service control is off on this portal (VX11_ALLOW_SERVICE_CONTROL)"}
    ]
    assert not serving(control.module.health_url)
    assert not PowerAction.objects.filter(action="start").exists()
    assert not WindowStop.objects.exists()
    assert post(power_api, "/madre/power/window/close").json()["services_stopped"] == []


def test_a_failed_start_is_listed_with_its_action_and_nothing_is_left_to_stop(power_on, power_api, demo_process):
    control = demo_process("hermes")
    control.command = [sys.executable, "-c", "raise SystemExit(3)"]
    control.save()
    r = post(power_api, "/madre/power/window/open", {"services": ["hermes"], "ttl_sec": 60})
    assert r.status_code == 200, r.content  # one failed start does not fail the window
    start = PowerAction.objects.get(action="start")
    assert (start.result, start.http_status, start.parent.action) == ("error", 502, "window_open")
    assert r.json()["services_started"] == []
    assert r.json()["services_start_failed"] == [{"service": "hermes", "reason": start.message, "action_id": start.id}]
    assert start.message.startswith("hermes exited with 3 before")
    assert "start failed: hermes" in r.json()["message"]
    assert not WindowStop.objects.exists()  # the backend left nothing running: nothing to stop
    assert post(power_api, "/madre/power/window/close").json()["services_stopped"] == []
    assert not PowerAction.objects.filter(action="stop").exists()


def test_a_module_whose_state_is_unknown_is_not_started(power_on, power_api, compose_switch):
    """compose cannot say whether switch runs (the stand-in's answer is not JSON): starting it could start a
    service that already ran and that the window would then stop, so it is listed and left alone."""
    r = post(power_api, "/madre/power/window/open", {"services": ["switch"], "ttl_sec": 60})
    assert r.status_code == 200, r.content
    [entry] = r.json()["services_not_startable"]
    assert entry["service"] == "switch"
    assert entry["reason"].startswith("cannot tell whether it runs: `docker compose -p vx11 ps --format json switch`")
    assert compose_switch.calls() == [["compose", "-p", "vx11", "ps", "--format", "json", "switch"]]


def test_a_stop_refused_at_close_is_left_to_the_checker(power_on, power_api, demo_process):
    control = demo_process("hermes", grace=1.0)
    assert post(power_api, "/madre/power/window/open", {"services": ["hermes"], "ttl_sec": 600}).status_code == 200
    assert serving(control.module.health_url)
    assert control.claim("restart by someone")
    r = post(power_api, "/madre/power/window/close")
    assert r.status_code == 200, r.content
    refused = PowerAction.objects.get(action="stop")
    assert (refused.result, refused.http_status, refused.parent.action) == ("refused", 409, "window_close")
    assert r.json()["services_stopped"] == []
    assert r.json()["services_not_stopped"] == [
        {"service": "hermes", "reason": refused.message, "action_id": refused.id}
    ]
    assert serving(control.module.health_url)
    control.release()
    power_on.VX11_POWER_WINDOW_RETRY_SECONDS = 10
    assert check_power_windows() == {"stopped": [], "failed": []}  # not before the retry delay
    assert check_power_windows(now=timezone.now() + timedelta(seconds=11)) == {"stopped": ["hermes"], "failed": []}
    assert not serving(control.module.health_url)
    window = MaintenanceWindow.objects.get()
    assert PowerAction.objects.filter(action="stop").latest("id").actor == f"window #{window.id} close (try 2)"
    window.refresh_from_db()
    assert window.expired_handled_at is not None


def test_madre_started_by_a_window_is_never_stopped(power_on, power_api, demo_process):
    control = demo_process("madre")
    r = post(power_api, "/madre/power/window/open", {"services": ["madre"], "ttl_sec": 600})
    assert r.json()["services_started"] == ["madre"]
    r = post(power_api, "/madre/power/window/close")
    assert (r.json()["services_stopped"], r.json()["services_left_running"]) == ([], ["madre"])
    assert r.json()["message"].endswith("left running: madre")
    assert expire_windows(timezone.now() + timedelta(hours=1)) == []
    assert serving(control.module.health_url)
    assert not PowerAction.objects.filter(action="stop").exists()


def test_the_checker_waits_for_a_start_still_running_when_the_window_ends(power_on, controller, fleet, stand_in):
    """A window shorter than its starts: the stop row is claimed while the module starts, so the checker neither
    stops it mid-start nor marks the window handled; it stops it once the start is over."""
    docker = stand_in("docker")
    ServiceControl.objects.create(module=fleet["hermes"], backend="compose")
    w = expired_window(controller, fleet["hermes"])
    WindowStop.objects.filter(window=w).update(started_at=None, claimed_at=timezone.now())  # starting
    assert check_power_windows() == {"stopped": [], "failed": []}
    w.refresh_from_db()
    assert w.expired_handled_at is None
    WindowStop.objects.filter(window=w).update(started_at=timezone.now(), claimed_at=None)  # started
    assert check_power_windows() == {"stopped": ["hermes"], "failed": []}
    assert docker.calls() == [["compose", "-p", "vx11", "stop", "hermes"]]


def test_the_console_and_the_cli_show_what_the_window_started(power_on, power_api, demo_process, admin_user):
    demo_process("hermes")
    assert (
        post(power_api, "/madre/power/window/open", {"services": ["hermes", "mcp"], "ttl_sec": 60}).status_code == 200
    )
    client = Client()
    client.force_login(admin_user)
    page = client.get(reverse("admin:power_console")).content.decode()
    assert "it started hermes, stopped when it closes or expires" in page
    out = StringIO()
    call_command("vx11_power", "status", "--json", stdout=out)
    assert json.loads(out.getvalue())["window"]["services_started"] == ["hermes"]
