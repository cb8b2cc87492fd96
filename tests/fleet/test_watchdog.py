"""The scheduler watchdog: /health says how old beat's last tick and the last probe round are and answers
503 naming the stalled one; a stall and its end go to every notification channel once each, sent by
the web process itself (beat, whose sweep sends notifications, is what died). Time is driven by `now=`."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from apps.events.models import Event
from apps.fleet import watchdog
from apps.fleet.models import (
    Delivery,
    HealthCheck,
    MaintenanceWindow,
    Module,
    NotificationChannel,
    SchedulerWatch,
    StateChange,
)
from tests.helpers import ROOT, database_url_of_test_db, free_port, redis_url

T0 = timezone.now().replace(microsecond=0)
LONG_AGO = T0 - timedelta(days=1)  # when "this process started watching", so no grace applies


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")[0]


@pytest.fixture
def schedule(db):
    """Only two beat entries: the probe round every 15 s and another task every 10 s (beat's tick: 3 x 10 s)."""
    PeriodicTask.objects.all().delete()
    probe = PeriodicTask.objects.create(name="probe", task=watchdog.PROBE_TASK, interval=every(15))
    other = PeriodicTask.objects.create(name="notify", task="apps.fleet.tasks.send_notifications", interval=every(10))
    module, _ = Module.objects.update_or_create(slug="madre", defaults={"enabled": True})
    return {"probe": probe, "other": other, "module": module}


def beat_sent(at):
    PeriodicTask.objects.update(last_run_at=at)


def round_stored(at):
    HealthCheck.objects.create(module=Module.objects.get(slug="madre"), checked_at=at, outcome="ok")


def looks(now, started=LONG_AGO) -> dict:
    return {s.name: s.as_dict() for s in watchdog.status(now=now, started=started)}


def test_ages_and_intervals_of_beat_and_probe_rounds(schedule):
    beat_sent(T0 - timedelta(seconds=4))
    round_stored(T0 - timedelta(seconds=12))
    assert looks(T0) == {
        "beat": {"status": "ok", "age_seconds": 4.0, "interval_seconds": 10.0},
        "probe_rounds": {"status": "ok", "age_seconds": 12.0, "interval_seconds": 15.0},
    }
    # three intervals is the limit: just under is fine, just over is a stall
    assert looks(T0 + timedelta(seconds=26))["beat"]["status"] == "ok"
    assert looks(T0 + timedelta(seconds=27))["beat"]["status"] == "stalled"
    assert looks(T0 + timedelta(seconds=33))["probe_rounds"]["status"] == "ok"
    assert looks(T0 + timedelta(seconds=34))["probe_rounds"]["status"] == "stalled"


def test_beats_interval_is_its_shortest_entry_but_never_under_its_own_wake_up(schedule):
    PeriodicTask.objects.create(name="window check", task="apps.power.tasks.check_power_windows", interval=every(2))
    beat_sent(T0)
    assert looks(T0)["beat"]["interval_seconds"] == 5.0  # beat sleeps up to 5 s between looks at its schedule
    PeriodicTask.objects.filter(name="window check").update(enabled=False)
    assert looks(T0)["beat"]["interval_seconds"] == 10.0  # a disabled entry is not expected to run


def test_nothing_to_watch_is_off_not_stalled(schedule):
    schedule["probe"].enabled = False
    schedule["probe"].save()
    assert looks(T0)["probe_rounds"] == {"status": "off", "age_seconds": None, "interval_seconds": None}
    schedule["probe"].enabled = True
    schedule["probe"].save()
    Module.objects.update(enabled=False)  # a round of no modules stores nothing
    assert looks(T0)["probe_rounds"]["status"] == "off"
    PeriodicTask.objects.update(enabled=False)
    assert looks(T0)["beat"]["status"] == "off"


def test_a_fresh_start_is_given_three_intervals_before_old_timestamps_count(schedule):
    beat_sent(T0 - timedelta(hours=5))  # the portal was stopped for hours; beat is starting with it
    fresh_start = looks(T0, started=T0 - timedelta(seconds=20))["beat"]
    assert fresh_start == {"status": "ok", "age_seconds": 18000.0, "interval_seconds": 10.0}
    assert looks(T0, started=T0 - timedelta(seconds=31))["beat"]["status"] == "stalled"
    # no round ever: the same grace, then a stall
    assert looks(T0, started=T0 - timedelta(seconds=40))["probe_rounds"]["status"] == "ok"
    assert looks(T0, started=T0 - timedelta(seconds=46))["probe_rounds"]["status"] == "stalled"


def test_health_is_503_and_names_what_stalled(schedule, monkeypatch):
    monkeypatch.setattr(watchdog, "STARTED", LONG_AGO)
    now = timezone.now()
    beat_sent(now - timedelta(seconds=2))
    round_stored(now - timedelta(seconds=3))
    r = Client().get("/health")
    assert r.status_code == 200, r.json()
    assert r.json()["status"] == "ok"
    assert "detail" not in r.json()
    assert r.json()["beat"]["status"] == r.json()["probe_rounds"]["status"] == "ok"

    beat_sent(now - timedelta(seconds=95))  # beat was killed 95 s ago; the worker still finished a round
    r = Client().get("/health")
    assert r.status_code == 503
    body = r.json()
    assert (body["status"], body["beat"]["status"], body["probe_rounds"]["status"]) == ("error", "stalled", "ok")
    assert body["detail"].startswith("beat sent no task for 9") and body["detail"].endswith("(over 3 × 10 s)")
    assert (body["database"], body["channel_layer"]) == ("ok", "ok")

    beat_sent(now)
    HealthCheck.objects.update(checked_at=now - timedelta(minutes=5))  # the worker died: beat's tasks pile up
    body = Client().get("/health").json()
    assert (body["beat"]["status"], body["probe_rounds"]["status"]) == ("ok", "stalled")
    assert body["detail"].startswith("no probe round stored for 3") and body["detail"].endswith("(over 3 × 15 s)")


@pytest.mark.django_db(transaction=True)
def test_health_names_a_dead_database_without_its_error_text(caplog):
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-vx11-dir/secret-name.sqlite3"
    else:
        connection.settings_dict.update(HOST="127.0.0.1", PORT="1")
    try:
        r = Client().get("/health")
    finally:
        connection.close()
        connection.settings_dict.update(saved)
    assert r.status_code == 503
    body = r.json()
    assert body["database"] == "error"
    assert body["beat"] == body["probe_rounds"] == {"status": "unknown"}
    assert body["detail"] == "the database did not answer"
    assert "secret-name" not in r.text
    assert "port 1" not in r.text.lower()
    assert "unable" not in r.text.lower()
    assert any(rec.exc_info and rec.getMessage() == "health: database check failed" for rec in caplog.records)


def test_a_stall_and_its_end_are_announced_once_each_to_every_channel(
    schedule, receiver, django_capture_on_commit_callbacks
):
    other = Module.objects.create(slug="solo", name="solo", base_url="http://127.0.0.1:29999")
    hook = NotificationChannel.objects.create(name="solo only", kind="webhook", target=receiver.url())
    hook.modules.set([other])  # a channel for one module still hears that the portal stopped watching it
    window = MaintenanceWindow.objects.create(starts_at=T0 - timedelta(hours=1), ends_at=T0 + timedelta(hours=1))
    window.modules.set([other])
    beat_sent(T0)
    round_stored(T0)

    with django_capture_on_commit_callbacks(execute=True):
        assert watchdog.check(now=T0 + timedelta(seconds=5), started=LONG_AGO)["change"] is None
        stalled_at = T0 + timedelta(seconds=31)
        first = watchdog.check(now=stalled_at, started=LONG_AGO)
        for s in (40, 60, 120):  # the same stall, looked at again and again
            assert watchdog.check(now=T0 + timedelta(seconds=s), started=LONG_AGO)["change"] is None
    assert first["change"].startswith("portal: scheduler stalled: beat sent no task for 31 s")
    assert [b["module"] for b in receiver.bodies()] == ["portal"]
    alert = receiver.bodies()[0]
    assert (alert["event"], alert["from"], alert["to"]) == ("status_changed", "up", "down")
    assert alert["reason"] == first["change"]

    recovered_at = T0 + timedelta(seconds=130)
    beat_sent(recovered_at)
    HealthCheck.objects.update(checked_at=recovered_at)
    with django_capture_on_commit_callbacks(execute=True):
        back = watchdog.check(now=recovered_at, started=LONG_AGO)
        assert watchdog.check(now=recovered_at + timedelta(seconds=5), started=LONG_AGO)["change"] is None
    assert back["change"].startswith("portal: scheduler recovered after 99 s (was: beat sent no task")
    posted = [(b["module"], b["from"], b["to"]) for b in receiver.bodies()]
    assert posted == [("portal", "up", "down"), ("portal", "down", "up")]

    portal = StateChange.objects.filter(module=None).order_by("at")
    assert [(c.from_state, c.to_state, c.at) for c in portal] == [
        ("up", "down", stalled_at),
        ("down", "up", recovered_at),
    ]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}  # never muted by a window
    assert [e.data["module"] for e in Event.objects.filter(type="status_changed")] == ["portal", "portal"]
    assert SchedulerWatch.objects.get().stalled_since is None


def test_while_beat_is_stalled_the_watchdog_sends_what_the_sweep_would(schedule, receiver):
    NotificationChannel.objects.create(name="all", kind="webhook", target=receiver.url())
    beat_sent(T0)
    round_stored(T0)
    watchdog.check(now=T0 + timedelta(seconds=31), started=LONG_AGO)  # stall announced
    # a module change during the stall (an operator's "Probe now"): no beat sweep will claim it
    StateChange.objects.create(
        module=schedule["module"], at=T0 + timedelta(seconds=35), from_state="up", to_state="down", reason="probe now"
    )
    receiver.statuses = [500]  # and the receiver fails once: the retry is the watchdog's too
    watchdog.check(now=T0 + timedelta(seconds=40), started=LONG_AGO)
    watchdog.check(now=T0 + timedelta(seconds=80), started=LONG_AGO)
    posted = [(b["module"], b["to"]) for b in receiver.bodies()]
    assert posted == [("portal", "down"), ("madre", "down"), ("madre", "down")]
    assert Delivery.objects.get(state_change__module=schedule["module"]).status == "sent"


@pytest.mark.django_db(transaction=True)
def test_watchers_looking_at_once_record_one_stall():
    workers = 4
    barrier = threading.Barrier(workers)
    made, errors = [], []

    def look():
        try:
            barrier.wait(timeout=10)
            made.append(SchedulerWatch.observe("beat sent no task for 40 s", T0))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=look) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len([c for c in made if c is not None]) == 1
    assert StateChange.objects.filter(module=None).count() == 1


def test_the_admin_lists_portal_changes_and_their_deliveries(schedule, receiver, admin_user, client):
    NotificationChannel.objects.create(name="all", kind="webhook", target=receiver.url())
    beat_sent(T0)
    watchdog.check(now=T0 + timedelta(seconds=31), started=LONG_AGO)
    client.force_login(admin_user)
    for url in ("/admin/fleet/statechange/", "/admin/fleet/delivery/"):
        r = client.get(url)
        assert r.status_code == 200, url
        assert "portal" in r.content.decode(), url


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the process died:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} within {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=20)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_real_beat_stamps_every_send_and_a_killed_one_is_a_stall(tmp_path):
    broker = redis_url()
    queue = f"watchdog-beat-test-{os.getpid()}"
    PeriodicTask.objects.all().delete()
    entry = PeriodicTask.objects.create(name="tick", task="apps.fleet.tasks.send_notifications", interval=every(1))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "DATABASE_URL": database_url_of_test_db(),
        "REDIS_URL": broker,
        "VX11_CELERY_QUEUE": queue,
    }  # nobody consumes that queue: beat only sends
    log = tmp_path / "beat.log"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "vx11_site",
        "beat",
        "-l",
        "INFO",
        "--scheduler",
        "django_celery_beat.schedulers:DatabaseScheduler",
        "-s",
        str(tmp_path / "schedule"),
    ]
    beat = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    stamps = set()

    def stamped_again():
        stamps.add(PeriodicTask.objects.get(pk=entry.pk).last_run_at)
        return len(stamps - {None}) >= 4  # beat's default writes once at start, then every 3 minutes

    try:
        wait_for(stamped_again, 60, "beat stamped four sends", beat, log)
        assert looks(timezone.now())["beat"]["status"] == "ok"
        stop(beat, signal.SIGKILL)
        last = PeriodicTask.objects.get(pk=entry.pk).last_run_at
        signals = {s.name: s for s in watchdog.status(now=last + timedelta(seconds=16), started=LONG_AGO)}
        assert signals["beat"].status == "stalled"  # 3 x 5 s: beat's own wake-up bounds the 1 s entry
        assert watchdog.problem(list(signals.values())).startswith("beat sent no task for 16 s")
    finally:
        stop(beat, signal.SIGKILL)
        import redis

        redis.Redis.from_url(broker).delete(queue)


@pytest.mark.django_db(transaction=True)
def test_the_web_process_announces_the_end_of_a_stall_with_no_beat_or_worker_running(tmp_path, receiver):
    """A real daphne: its first HTTP request starts the watchdog thread, which sees beat ticking again after a
    recorded stall and posts the recovery itself (no beat sweep, no worker exists in this test)."""
    PeriodicTask.objects.all().delete()
    now = timezone.now()
    PeriodicTask.objects.create(
        name="notify", task="apps.fleet.tasks.send_notifications", interval=every(10), last_run_at=now
    )
    SchedulerWatch.objects.create(pk=1, stalled_since=now - timedelta(minutes=2), reason="beat sent no task for 40 s")
    NotificationChannel.objects.create(name="all", kind="webhook", target=receiver.url())
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "DATABASE_URL": database_url_of_test_db(),
        "VX11_WATCHDOG_SECONDS": "0.2",
    }
    log = tmp_path / "daphne.log"
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vx11_site.asgi:application"]
    daphne = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:

        def answering():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(answering, 30, "daphne answered", daphne, log)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert health.status_code == 200, health.text
        wait_for(lambda: receiver.requests, 30, "the recovery was posted", daphne, log)
    finally:
        stop(daphne)
    alert = receiver.bodies()[0]
    assert (alert["module"], alert["from"], alert["to"]) == ("portal", "down", "up")
    assert alert["reason"].startswith("portal: scheduler recovered after 1")
    assert alert["reason"].endswith("(was: beat sent no task for 40 s)")
    assert SchedulerWatch.objects.get().stalled_since is None
