"""Power windows: open, one at a time, close; a ttl window stops its modules when it expires, retrying a refused
or failed stop."""

from datetime import timedelta

import httpx
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.fleet.models import MaintenanceWindow
from apps.power.backends import pid_alive
from apps.power.manager import expire_windows
from apps.power.models import PowerAction, ServiceControl, WindowStop
from apps.power.tasks import check_power_windows
from tests.power.helpers import post


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_open_one_at_a_time_and_close(power_on, power_api, fleet):
    r = post(
        power_api,
        "/madre/power/window/open",
        {"services": ["switch", "hermes"], "ttl_sec": 300, "mode": "hold", "reason": "upgrade"},
    )
    assert r.status_code == 200, r.content
    w = r.json()["window"]
    assert w["services"] == ["hermes", "switch"]
    assert w["mode"] == "hold"
    assert 299 <= w["ttl_left_sec"] <= 300
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
    assert r.json()["window"]["closed_at"]
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
    assert post(power_api, "/madre/power/service/hermes/start", {"apply": True}).status_code == 200
    control.refresh_from_db()
    pid = control.pid
    assert pid_alive(pid)
    assert answers(control.module.health_url)

    ends_at = MaintenanceWindow.objects.get().ends_at
    assert check_power_windows() == {"stopped": [], "failed": []}  # not expired yet
    assert check_power_windows(now=ends_at - timedelta(seconds=1)) == {"stopped": [], "failed": []}
    assert pid_alive(pid)
    expired = ends_at + timedelta(milliseconds=50)
    assert check_power_windows(now=expired) == {"stopped": ["hermes"], "failed": []}  # madre is never stopped

    assert not pid_alive(pid)
    assert not answers(control.module.health_url)
    stop = PowerAction.objects.get(action="stop")
    assert stop.applied
    assert stop.result == "ok"
    assert stop.actor.startswith("window #")
    assert stop.user.username == "controller"
    assert expire_windows(now=ends_at + timedelta(hours=1)) == []  # each window once, however late the next check


def test_hold_and_closed_windows_stop_nothing(power_on, power_api, demo_process, fleet):
    control = demo_process("hermes")
    post(power_api, "/madre/power/window/open", {"services": ["hermes"], "ttl_sec": 60, "mode": "hold"})
    assert post(power_api, "/madre/power/service/hermes/start", {"apply": True}).status_code == 200
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
    assert answers(control.module.health_url)


def test_checker_scheduled_by_migration(db):
    task = PeriodicTask.objects.get(task="apps.power.tasks.check_power_windows")
    assert task.enabled
    assert task.interval.every <= 5
    assert task.interval.period == "seconds"
    assert PeriodicTask.objects.filter(task="apps.power.tasks.prune_power_actions").exists()


def expired_window(user, *modules) -> MaintenanceWindow:
    now = timezone.now()
    w = MaintenanceWindow.objects.create(
        source="power",
        mode="ttl",
        starts_at=now - timedelta(seconds=10),
        ends_at=now - timedelta(seconds=1),
        created_by=user,
    )
    w.modules.set(modules)
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
    assert WindowStop.objects.get(window=w).state == "done"  # madre has none: never stopped


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
    WindowStop.objects.create(window=expired_window(controller, fleet["hermes"]), module=fleet["hermes"])
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
