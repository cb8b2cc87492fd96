"""The power world: a controller with the permission, demo modules as real OS processes, stand-ins.

- `controller` / `power_api`: a staff user holding power.control_services and a client with its key.
- `power_on`: service control allowed, evidence and var/ into tmp_path, short timeouts.
- `demo_process(slug)`: points the module at a free port and gives it the process backend running
  `python -m apps.simfleet.serve_one <slug> --port N`; every process still alive is killed at teardown.
- `window(*slugs)`: a maintenance window covering those modules for an hour.
- `stand_in(name, exit_code=0)`: a recording executable named `name` first on PATH; `.calls()` are
  the argument lists it received; `replies={last arg: (stdout, exit code)}` scripts its answers.
- `fleet_token(power_key=None)`: a client sending madre's fleet token (VX11_TOKEN set to tests.helpers.TOKEN,
  VX11_POWER_KEY to POWER_KEY) and, if given, `X-VX11-POWER-KEY`.
"""

import os
import signal
import sys
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from apps.accounts.models import ApiKey
from apps.fleet.models import MaintenanceWindow, Module
from apps.power import backends
from apps.power.models import ServiceControl
from tests.helpers import TOKEN, free_port
from tests.power.helpers import POWER_KEY, StandIn


@pytest.fixture
def power_on(settings, tmp_path):
    settings.VX11_ALLOW_SERVICE_CONTROL = True
    settings.VX11_MAINTENANCE_WINDOW_ENABLED = True
    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"
    settings.VAR_DIR = tmp_path / "var"  # var/power/<slug>.log of the process backend
    settings.VX11_POWER_HEALTH_TIMEOUT = 10.0
    settings.VX11_POWER_COMMAND_TIMEOUT = 5.0
    return settings


@pytest.fixture
def controller(db, django_user_model):
    user = django_user_model.objects.create_user("controller", password=None, is_staff=True)  # no hashing: keys only
    user.user_permissions.add(Permission.objects.get(codename="control_services", content_type__app_label="power"))
    return user


@pytest.fixture
def power_api(controller):
    return Client(headers={"Authorization": f"Bearer {ApiKey.issue(controller, 'power rw')[1]}"})


@pytest.fixture
def demo_process(fleet):
    def make(slug: str, grace: float = 2.0) -> ServiceControl:
        port = free_port()
        module = fleet[slug]
        module.base_url = f"http://127.0.0.1:{port}"
        module.save()
        argv = [sys.executable, "-m", "apps.simfleet.serve_one", slug, "--port", str(port)]
        control, _ = ServiceControl.objects.update_or_create(
            module=module,
            defaults={"backend": ServiceControl.Backend.PROCESS, "command": argv, "stop_grace_sec": grace},
        )
        return control

    yield make
    for pid, child in list(backends._children.items()):
        if child.poll() is None:
            os.killpg(pid, signal.SIGKILL)
            child.wait(timeout=5)
        backends._children.pop(pid, None)


@pytest.fixture
def window(fleet):
    def make(*slugs: str) -> MaintenanceWindow:
        now = timezone.now()
        w = MaintenanceWindow.objects.create(
            starts_at=now - timedelta(seconds=1), ends_at=now + timedelta(hours=1), reason="test"
        )
        w.modules.set(Module.objects.filter(slug__in=slugs))
        return w

    return make


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")

    def make(name: str, exit_code: int = 0, replies: dict | None = None) -> StandIn:
        return StandIn(folder, name, exit_code, replies)

    return make


@pytest.fixture
def evidence(power_on):
    """The evidence bags written so far (folders docs/audit/madre_power_*/; the files are under data/), oldest
    name first."""

    def folders() -> list:
        audit = power_on.VX11_EVIDENCE_ROOT / "docs" / "audit"
        return sorted(audit.glob("madre_power_*")) if audit.exists() else []

    return folders


@pytest.fixture
def compose_switch(fleet, stand_in):
    """switch on the compose backend with a recording `docker` (fast, so guards are what is tested)."""
    docker = stand_in("docker")
    ServiceControl.objects.create(module=fleet["switch"], backend=ServiceControl.Backend.COMPOSE)
    return docker


@pytest.fixture
def fleet_token(settings):
    settings.VX11_TOKEN = TOKEN
    settings.VX11_POWER_KEY = POWER_KEY

    def client(power_key: str | None = None) -> Client:
        headers = {"X-VX11-Token": TOKEN} | ({"X-VX11-POWER-KEY": power_key} if power_key is not None else {})
        return Client(headers=headers)

    return client
