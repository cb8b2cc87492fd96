"""Notifications: every state change reaches each channel once, signed, with retries; windows mute.

A real HTTP receiver on 127.0.0.1 records what it is sent; time is driven by passing `now`.
"""

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.fleet import notify
from apps.fleet.models import (
    Delivery,
    HealthCheck,
    MaintenanceWindow,
    Module,
    NotificationChannel,
    ProbeResult,
    StateChange,
)
from apps.fleet.tasks import send_notifications

T0 = timezone.now().replace(microsecond=0)
SECRET = "webhook-secret-123"


def webhook(receiver, name="ops hook", path="/hook", secret=SECRET, modules=()):
    channel = NotificationChannel.objects.create(name=name, kind="webhook", target=receiver.url(path), secret=secret)
    channel.modules.set(modules)
    return channel


def change(slug, to="down", frm="up", at=T0, reason="3 failures in a row: connection refused"):
    return StateChange.objects.create(
        module=Module.objects.get(slug=slug), at=at, from_state=frm, to_state=to, reason=reason
    )


def probe(module, outcome, at):
    ok = outcome == "ok"
    return ProbeResult(
        module.id,
        module.slug,
        at,
        outcome,
        200 if ok else None,
        4.0 if ok else None,
        "ok" if ok else "",
        "" if ok else "connection refused",
    )


@pytest.mark.django_db
def test_a_state_change_is_one_signed_post(receiver):
    channel = webhook(receiver)
    madre = Module.objects.get(slug="madre")
    # the first good result (unknown -> up) is not news; three failures in a row (up -> down) are
    for i, outcome in enumerate(["ok", "fail", "fail", "fail"]):
        HealthCheck.record_round([probe(madre, outcome, T0 + timedelta(seconds=15 * i))])
    down = StateChange.objects.get(module=madre, to_state="down")

    counts = notify.sweep(now=T0 + timedelta(minutes=1))

    assert counts["claimed"] == 2
    assert counts["queued"] == 1
    assert counts["sent"] == 1
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["headers"]["Content-Type"] == "application/json"
    expected = "sha256=" + hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-VX11-Signature"], expected)
    assert json.loads(request["body"]) == {
        "event": "status_changed",
        "module": "madre",
        "from": "up",
        "to": "down",
        "reason": "3 failures in a row: connection refused",
        "at": down.at.isoformat(),
    }
    delivery = Delivery.objects.get()
    assert (delivery.state_change, delivery.channel, delivery.status, delivery.attempts) == (down, channel, "sent", 1)
    assert delivery.sent_at == T0 + timedelta(minutes=1)
    assert request["headers"]["X-VX11-Delivery"] == str(delivery.id)
    assert StateChange.objects.filter(claimed_at__isnull=True).count() == 0


@pytest.mark.django_db
def test_an_empty_secret_means_an_unsigned_post(receiver):
    webhook(receiver, secret="")
    change("madre")
    notify.sweep(now=T0)
    assert len(receiver.requests) == 1
    assert "X-VX11-Signature" not in receiver.requests[0]["headers"]


@pytest.mark.django_db
def test_running_the_sweep_again_sends_nothing_twice(receiver):
    webhook(receiver)
    change("madre")
    for minutes in (0, 0, 1, 60, 24 * 60):
        notify.sweep(now=T0 + timedelta(minutes=minutes))
    assert len(receiver.requests) == 1
    assert Delivery.objects.get().attempts == 1


@pytest.mark.django_db(transaction=True)  # starts from a flushed database: makes its own modules
def test_workers_sweeping_at_once_send_each_change_once(receiver):
    modules = [
        Module.objects.create(slug=f"race-{i}", name=f"race {i}", base_url=f"http://127.0.0.1:{20000 + i}")
        for i in range(6)
    ]
    webhook(receiver, modules=modules)
    for m in modules:
        StateChange.objects.create(module=m, at=T0, from_state="up", to_state="down", reason="gone")

    workers = 4
    barrier = threading.Barrier(workers)
    errors = []

    def worker():
        try:
            barrier.wait(timeout=10)
            notify.sweep(now=T0 + timedelta(seconds=1))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    notify.sweep(now=T0 + timedelta(hours=2))  # and once more, long after

    assert sorted(b["module"] for b in receiver.bodies()) == sorted(m.slug for m in modules)
    assert Delivery.objects.count() == len(modules)
    assert set(Delivery.objects.values_list("status", "attempts")) == {("sent", 1)}


@pytest.mark.django_db
def test_a_failing_receiver_is_retried_with_growing_backoff_until_it_recovers(receiver):
    webhook(receiver)
    change("madre")
    receiver.statuses = [500, 500, 500]

    now = T0
    notify.sweep(now=now)
    waits = []
    while (delivery := Delivery.objects.get()).status == "pending":
        assert delivery.last_error == "HTTP 500"
        wait = delivery.next_attempt_at - now
        waits.append(wait.total_seconds())
        posts = len(receiver.requests)
        notify.sweep(now=now + wait - timedelta(seconds=1))  # not yet due
        assert len(receiver.requests) == posts
        now += wait
        notify.sweep(now=now)

    assert waits == [30, 60, 120]
    assert len(receiver.requests) == 4
    assert (delivery.status, delivery.attempts, delivery.last_error, delivery.sent_at) == ("sent", 4, "", now)


@pytest.mark.django_db
def test_gives_up_after_six_attempts(receiver):
    webhook(receiver)
    change("madre")
    receiver.statuses = [503] * 20
    now = T0
    for _ in range(10):
        notify.sweep(now=now)
        delivery = Delivery.objects.get()
        now = delivery.next_attempt_at or now + timedelta(hours=2)
    assert len(receiver.requests) == Delivery.MAX_ATTEMPTS == 6
    assert (delivery.status, delivery.attempts, delivery.last_error, delivery.next_attempt_at) == (
        "failed",
        6,
        "HTTP 503",
        None,
    )


@pytest.mark.django_db
def test_an_unreachable_receiver_is_a_failure_to_retry(receiver):
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_port}/hook"
    closed.server_close()  # nothing listens there now
    NotificationChannel.objects.create(name="gone", kind="webhook", target=url, secret=SECRET)
    change("madre")
    counts = notify.sweep(now=T0)
    delivery = Delivery.objects.get()
    assert counts["retrying"] == 1
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("pending", 1, T0 + timedelta(seconds=30))
    assert delivery.last_error.startswith("ConnectError")


def test_backoff_doubles_from_30_seconds_and_stops_at_an_hour():
    assert [Delivery.backoff(n).total_seconds() for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


@pytest.mark.django_db
def test_email_goes_to_every_address(mailoutbox):
    NotificationChannel.objects.create(name="ops mail", kind="email", target="ops@example.com, oncall@example.com")
    change("madre", reason="3 failures in a row: connection refused")
    notify.sweep(now=T0)
    notify.sweep(now=T0 + timedelta(minutes=5))
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.subject == "[VX11] madre is down"
    assert message.to == ["ops@example.com", "oncall@example.com"]
    assert "3 failures in a row: connection refused" in message.body
    assert Delivery.objects.get().status == "sent"


@pytest.mark.django_db
def test_a_channel_limited_to_some_modules_ignores_the_others(receiver):
    madre, hermes = Module.objects.get(slug="madre"), Module.objects.get(slug="hermes")
    scoped = webhook(receiver, name="madre only", path="/madre-only", modules=[madre])
    everything = webhook(receiver, name="everything", path="/all")
    change("madre")
    change("hermes")
    notify.sweep(now=T0)
    seen = sorted((r["path"], json.loads(r["body"])["module"]) for r in receiver.requests)
    assert seen == [("/all", "hermes"), ("/all", "madre"), ("/madre-only", "madre")]
    assert not Delivery.objects.filter(channel=scoped, state_change__module=hermes).exists()
    assert Delivery.objects.filter(channel=everything).count() == 2


@pytest.mark.django_db
def test_disabled_channels_get_nothing(receiver):
    channel = webhook(receiver)
    channel.enabled = False
    channel.save()
    change("madre")
    notify.sweep(now=T0)
    assert receiver.requests == []
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_a_module_inside_a_maintenance_window_gets_a_muted_delivery_and_no_post(receiver, admin_user):
    channel = webhook(receiver)
    madre = Module.objects.get(slug="madre")
    window = MaintenanceWindow.objects.create(
        starts_at=T0 - timedelta(minutes=5), ends_at=T0 + timedelta(hours=1), reason="upgrade", created_by=admin_user
    )
    window.modules.set([madre])
    assert MaintenanceWindow.module_in_window(madre, T0)
    assert list(MaintenanceWindow.covering(madre, T0)) == [window]
    assert not MaintenanceWindow.module_in_window(madre, T0 + timedelta(hours=1))  # ends_at is exclusive

    inside = change("madre", at=T0)
    other = change("hermes", at=T0)  # not in the window
    after = change("madre", to="up", frm="down", at=T0 + timedelta(hours=2), reason="2 successes in a row")
    for minutes in (0, 1, 200):
        notify.sweep(now=T0 + timedelta(hours=2, minutes=minutes))

    assert Delivery.objects.get(state_change=inside, channel=channel).status == "muted"
    assert Delivery.objects.get(state_change=other).status == "sent"
    assert Delivery.objects.get(state_change=after).status == "sent"
    assert sorted((b["module"], b["to"]) for b in receiver.bodies()) == [("hermes", "down"), ("madre", "up")]


@pytest.mark.django_db
def test_the_task_runs_the_sweep_and_beat_runs_it_every_ten_seconds(receiver):
    webhook(receiver)
    change("madre")
    result = send_notifications()
    assert (result["claimed"], result["sent"]) == (1, 1)
    assert len(receiver.requests) == 1
    entry = PeriodicTask.objects.get(task="apps.fleet.tasks.send_notifications")
    assert (entry.interval.every, entry.interval.period, entry.enabled) == (10, "seconds", True)


@pytest.mark.django_db
def test_admin_lists_channels_deliveries_and_windows(receiver, admin_user, client):
    client.force_login(admin_user)
    webhook(receiver, modules=[Module.objects.get(slug="madre")])
    change("madre")
    notify.sweep(now=T0)
    for name in ("notificationchannel", "delivery", "maintenancewindow"):
        assert client.get(f"/admin/fleet/{name}/").status_code == 200
    assert client.get("/admin/fleet/delivery/?status__exact=sent").status_code == 200
    assert client.get("/admin/fleet/delivery/add/").status_code == 403  # read-only

    response = client.post(
        "/admin/fleet/maintenancewindow/add/",
        {
            "modules": [Module.objects.get(slug="hermes").pk],
            "reason": "kernel upgrade",
            "starts_at_0": "2030-01-01",
            "starts_at_1": "10:00:00",
            "ends_at_0": "2030-01-01",
            "ends_at_1": "11:00:00",
        },
    )
    assert response.status_code == 302
    window = MaintenanceWindow.objects.get(reason="kernel upgrade")
    assert window.created_by == admin_user
    assert [m.slug for m in window.modules.all()] == ["hermes"]


@pytest.mark.django_db
def test_channel_targets_are_validated():
    from django.core.exceptions import ValidationError

    bad = [
        ("webhook", "ftp://example.com/x"),
        ("webhook", "not a url"),
        ("email", ""),
        ("email", "ops@example.com, nope"),
    ]
    for kind, target in bad:
        with pytest.raises(ValidationError):
            NotificationChannel(name=f"bad {kind} {target}", kind=kind, target=target).full_clean()
    NotificationChannel(name="good mail", kind="email", target=" ops@example.com ,oncall@example.com").full_clean()
    NotificationChannel(name="good hook", kind="webhook", target="https://hooks.example.com/vx11").full_clean()
