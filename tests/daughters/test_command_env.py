"""A `command` daughter sees a minimal environment: PATH, LANG, its attempt id and the names its
allow-list entry asks for; never the worker's secrets (SECRET_KEY, VX11_TOKEN, database URLs)."""

import json
import os
import subprocess
import sys

import pytest

from apps.daughters.models import DaughterTask
from tests.helpers import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

SHOW_ENV = [
    sys.executable,
    "-c",
    "import json, os; print(json.dumps({'names': sorted(os.environ), 'needed': os.environ.get('VX11_TEST_NEEDED')}))",
]
SECRETS = {
    "SECRET_KEY": "django-secret-123",
    "VX11_TOKEN": "portal-token-456",
    "DATABASE_URL": "postgres://u:pw@db/vx11",
    "REDIS_URL": "redis://:pw@cache/0",
}


@pytest.fixture(autouse=True)
def worker_env(settings, monkeypatch):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.VX11_DAUGHTER_HEARTBEAT_SECONDS = 0.05
    settings.VX11_DAUGHTER_COMMANDS = {
        **settings.VX11_DAUGHTER_COMMANDS,
        "show-env": SHOW_ENV,
        "show-env-needing": {"argv": SHOW_ENV, "env": ["VX11_TEST_NEEDED", "VX11_TEST_UNSET"]},
    }
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VX11_TEST_NEEDED", "needed-value")
    monkeypatch.delenv("VX11_TEST_UNSET", raising=False)


def seen_by(command: str) -> dict:
    daughter = DaughterTask.spawn("command", {"command": command}, max_retries=0).daughters.get()
    daughter.refresh_from_db()
    assert daughter.status == "finished", daughter.error_last
    return json.loads(daughter.result["output"])


def test_a_command_sees_path_lang_and_its_attempt_only():
    seen = seen_by("show-env")
    assert seen["names"] == ["LANG", "PATH", "VX11_DAUGHTER_ATTEMPT"]
    assert seen["needed"] is None


def test_an_entry_names_the_variables_it_needs():
    seen = seen_by("show-env-needing")
    assert seen["names"] == [
        "LANG",
        "PATH",
        "VX11_DAUGHTER_ATTEMPT",
        "VX11_TEST_NEEDED",
    ]  # an unset name is simply absent
    assert seen["needed"] == "needed-value"


def test_env_shows_no_secret(settings):
    settings.VX11_DAUGHTER_OUTPUT_CHARS = 1_000_000  # the whole output is stored: nothing is cut off
    settings.VX11_DAUGHTER_COMMANDS = {**settings.VX11_DAUGHTER_COMMANDS, "env": ["env"]}
    daughter = DaughterTask.spawn("command", {"command": "env"}, max_retries=0).daughters.get()
    daughter.refresh_from_db()
    assert daughter.status == "finished"
    assert "PATH=" in daughter.result["output"]
    stored = json.dumps(
        [daughter.__class__.objects.filter(pk=daughter.pk).values().get(), list(daughter.attempts.values())],
        default=str,
    )
    assert not [value for value in SECRETS.values() if value in stored]


@pytest.mark.parametrize(
    "value",
    [
        '{"x": {"argv": ["true"], "env": ["BAD NAME"]}}',
        '{"x": {"argv": [], "env": []}}',
        '{"x": {"argv": ["true"], "shell": true}}',
        '{"x": {"env": ["PATH"]}}',
    ],
)
def test_a_bad_entry_stops_the_start_up(value):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "vx11_site.settings", "VX11_DAUGHTER_COMMANDS": value}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "VX11_DAUGHTER_COMMANDS must be a JSON object" in done.stderr


def test_the_object_form_is_accepted_at_start_up():
    value = json.dumps({"dump": {"argv": ["pg_dump", "-Fc"], "env": ["PGPASSWORD"]}, "ls": ["ls", "-l"]})
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "vx11_site.settings", "VX11_DAUGHTER_COMMANDS": value}
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.VX11_DAUGHTER_COMMANDS['dump']['env'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "['PGPASSWORD']", done.stderr
