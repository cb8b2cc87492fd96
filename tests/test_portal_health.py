import pytest
from django.test import Client


@pytest.mark.django_db
def test_portal_health_reports_database_and_channel_layer():
    r = Client().get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "module": "portal", "database": "ok", "channel_layer": "ok"}


@pytest.mark.django_db
def test_portal_health_is_503_when_the_channel_layer_is_unreachable(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        r = Client().get("/health")
    finally:
        channel_layers.backends.clear()
    assert r.status_code == 503
    assert r.json()["channel_layer"].startswith("error")
    assert r.json()["database"] == "ok"
