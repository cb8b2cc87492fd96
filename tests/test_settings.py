"""Settings come from the environment; unclear values stop the start-up with a clear message."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.helpers import ROOT
from vx11_site.settings import envbool, envfloat, envint, envsecret


def test_typed_helpers(monkeypatch, tmp_path):
    monkeypatch.setenv("X_BOOL", "Yes")
    monkeypatch.setenv("X_INT", "42")
    monkeypatch.setenv("X_FLOAT", "0.5")
    assert envbool("X_BOOL", False) is True
    assert envint("X_INT", 1) == 42
    assert envfloat("X_FLOAT", 1.0) == 0.5
    assert envint("X_MISSING", 7) == 7
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert envsecret("X_SECRET") == "s3cret"


@pytest.mark.parametrize(
    "fn, value, message",
    [
        (envbool, "maybe", "is not a boolean"),
        (envint, "12a", "is not an integer"),
        (envfloat, "fast", "is not a number"),
    ],
)
def test_unclear_values_fail_loudly(monkeypatch, fn, value, message):
    monkeypatch.setenv("X_BAD", value)
    with pytest.raises(ImproperlyConfigured, match=message):
        fn("X_BAD", 1)


def test_redis_url_switches_broker_and_channel_layer():
    code = (
        "from django.conf import settings as s; "
        "print(s.CELERY_BROKER_URL, s.CHANNEL_LAYERS['default']['BACKEND'], s.DATABASES['default']['ENGINE'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["DJANGO_SETTINGS_MODULE"] = "vx11_site.settings"
    embedded = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert embedded.stdout.split()[0].startswith("vx11sqla+sqlite:///")
    assert embedded.stdout.split()[1:] == ["channels.layers.InMemoryChannelLayer", "django.db.backends.sqlite3"]
    env.update(REDIS_URL="redis://127.0.0.1:6379/9", DATABASE_URL="postgres://postgres@127.0.0.1:5432/x")
    served = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.stdout.split() == [
        "redis://127.0.0.1:6379/9",
        "channels_redis.core.RedisChannelLayer",
        "django.db.backends.postgresql",
    ]
