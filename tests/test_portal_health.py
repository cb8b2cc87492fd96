import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.fleet.models import HealthCheck, Module


@pytest.fixture
def scheduler_running(db):
    """Beat has just sent its tasks and the worker has just stored a round (tests/fleet/test_watchdog: when not)."""
    now = timezone.now()
    PeriodicTask.objects.update(last_run_at=now)
    HealthCheck.objects.create(module=Module.objects.filter(enabled=True).first(), checked_at=now, outcome="ok")


def test_portal_health_reports_database_channel_layer_beat_and_probe_rounds(scheduler_running):
    r = Client().get("/health")
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("status", "module", "database", "channel_layer")} == {
        "status": "ok",
        "module": "portal",
        "database": "ok",
        "channel_layer": "ok",
    }
    assert body["beat"]["status"] == body["probe_rounds"]["status"] == "ok"
    assert body["beat"]["age_seconds"] < 60
    assert body["probe_rounds"]["interval_seconds"] == 15
    assert "detail" not in body


def test_portal_health_is_503_when_the_channel_layer_is_unreachable(settings, scheduler_running, caplog):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        r = Client().get("/health")
    finally:
        channel_layers.backends.clear()
    assert r.status_code == 503
    body = r.json()
    assert (body["channel_layer"], body["database"]) == ("error", "ok")
    assert body["detail"] == "the channel layer did not answer"
    # an unauthenticated page names what failed, never how: the exception is in the log only
    assert "127.0.0.1" not in r.text
    assert "Connect" not in r.text
    assert "Errno" not in r.text
    assert any(rec.exc_info and rec.getMessage() == "health: channel layer check failed" for rec in caplog.records)
