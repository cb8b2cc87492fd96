"""Power windows: open, one at a time, close; a ttl window stops its modules when it expires."""

import time
from datetime import timedelta

import httpx
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.fleet.models import MaintenanceWindow
from apps.power.backends import pid_alive
from apps.power.models import PowerAction, expire_windows
from apps.power.tasks import check_power_windows

from tests.power.conftest import post


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_open_one_at_a_time_and_close(power_on, power_api, fleet):
    r = post(power_api, "/madre/power/window/open", {"services": ["switch", "hermes"], "ttl_sec": 300, "mode": "hold", "reason": "upgrade"})
    assert r.status_code == 200, r.content
    w = r.json()["window"]
    assert w["services"] == ["hermes", "switch"] and w["mode"] == "hold" and 299 <= w["ttl_left_sec"] <= 300
    window = MaintenanceWindow.objects.get(id=w["id"])
    assert window.source == "power" and window.created_by.username == "controller"
    assert MaintenanceWindow.module_in_window(fleet["switch"], timezone.now())  # fleet state: also mutes notifications

    second = post(power_api, "/madre/power/window/open", {"services": ["mcp"], "ttl_sec": 60})
    assert second.status_code == 409 and f"#{window.id} is already open" in second.json()["detail"]

    assert power_api.get("/madre/power/status").json()["window"]["id"] == window.id
    r = post(power_api, "/madre/power/window/close")
    assert r.status_code == 200 and r.json()["window"]["closed_at"]
    assert not MaintenanceWindow.module_in_window(fleet["switch"], timezone.now())
    assert power_api.get("/madre/power/status").json()["window"] is None
    assert post(power_api, "/madre/power/window/close").status_code == 404
    # a new one may open now
    assert post(power_api, "/madre/power/window/open", {"services": ["mcp"], "ttl_sec": 60}).status_code == 200
    assert list(PowerAction.objects.order_by("id").values_list("action", "result")) == [
        ("window_open", "ok"), ("window_open", "refused"), ("window_close", "ok"), ("window_close", "refused"), ("window_open", "ok")]


def test_service_outside_fleet_422(power_on, power_api, fleet):
    r = post(power_api, "/madre/power/window/open", {"services": ["switch", "ghost"], "ttl_sec": 30})
    assert r.status_code == 422 and "ghost" in r.json()["detail"]
    assert not MaintenanceWindow.objects.exists()
    assert PowerAction.objects.get().http_status == 422


def test_ttl_expiry_stops_the_process(power_on, power_api, demo_process):
    control = demo_process("hermes", grace=1.0)
    r = post(power_api, "/madre/power/window/open", {"services": ["hermes", "madre"], "ttl_sec": 1, "reason": "short job"})
    assert r.status_code == 200
    assert post(power_api, "/madre/power/service/hermes/start", {"apply": True}).status_code == 200
    control.refresh_from_db()
    pid = control.pid
    assert pid_alive(pid) and answers(control.module.health_url)

    assert check_power_windows() == {"stopped": [], "failed": []}  # not expired yet
    time.sleep(max(0.0, (MaintenanceWindow.objects.get().ends_at - timezone.now()).total_seconds()) + 0.05)
    assert check_power_windows() == {"stopped": ["hermes"], "failed": []}  # madre is never stopped

    assert not pid_alive(pid) and not answers(control.module.health_url)
    stop = PowerAction.objects.get(action="stop")
    assert stop.applied and stop.result == "ok" and stop.actor.startswith("window #") and stop.user.username == "controller"
    assert expire_windows() == []  # each window once


def test_hold_and_closed_windows_stop_nothing(power_on, power_api, demo_process, fleet):
    control = demo_process("hermes")
    post(power_api, "/madre/power/window/open", {"services": ["hermes"], "ttl_sec": 60, "mode": "hold"})
    assert post(power_api, "/madre/power/service/hermes/start", {"apply": True}).status_code == 200
    later = timezone.now() + timedelta(seconds=120)
    assert expire_windows(later) == []
    now = timezone.now()
    ttl = MaintenanceWindow.objects.create(source="power", mode="ttl", starts_at=now - timedelta(seconds=10),
                                           ends_at=now - timedelta(seconds=5), closed_at=now - timedelta(seconds=6))
    ttl.modules.set([fleet["hermes"]])
    assert expire_windows() == []
    assert answers(control.module.health_url)


def test_checker_scheduled_by_migration(db):
    task = PeriodicTask.objects.get(task="apps.power.tasks.check_power_windows")
    assert task.enabled and task.interval.every <= 5 and task.interval.period == "seconds"
    assert PeriodicTask.objects.filter(task="apps.power.tasks.prune_power_actions").exists()
