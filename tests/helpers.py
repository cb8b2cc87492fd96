"""Plain helpers of the tests: constants, functions and classes, never fixtures.

Where a helper lives (one rule for the whole tree):
- used by tests of one directory only: that directory's `helpers.py` (tests/flows/helpers.py, ...);
- used by more than one directory: here, tests/helpers.py;
- conftest.py files hold fixtures and pytest hooks only, and no test module imports from a conftest.py
  or from another test module: a fixture shared by several test modules goes in the nearest conftest.py.
Import them by their full name, `from tests.helpers import free_port`: pytest-django puts the project root
(where manage.py is) on sys.path, and `tests` is a namespace package there.
"""

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.contrib import admin
from django.db import connection
from django.test import RequestFactory, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from apps.fleet.models import Module
from apps.fleet.reference import reference_rows

TEST_TIMEOUT = 0.5
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "e2e-token-456"


def redis_url() -> str | None:
    """The Redis for tests that need a real one; CI (VX11_REQUIRE_SERVICES=1) fails if it is missing."""
    url = os.environ.get("REDIS_URL") or os.environ.get("VX11_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return url
    except Exception as exc:
        if os.environ.get("VX11_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis at {url} is required (VX11_REQUIRE_SERVICES=1) but does not answer: {exc}")
        pytest.skip(f"no Redis at {url}: {exc}")


def confine_to(settings, tmp_path: Path) -> Path:
    """The audit target, the managed tree and the evidence in the test's own folder: tmp_path/fleet (returned, the
    only root a target may lie in; VX11_TARGET_DB is vx11.db there, not made), tmp_path/vx11_root, tmp_path/evidence."""
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    settings.VX11_AUDIT_ALLOWED_ROOTS = [fleet]
    settings.VX11_TARGET_DB = str(fleet / "vx11.db")
    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"
    settings.VX11_ROOT = tmp_path / "vx11_root"
    return fleet


def point_fleet_at(sim, timeout: float = TEST_TIMEOUT) -> dict[str, Module]:
    modules = {}
    for row in reference_rows():
        row.update(base_url=sim.base_url(row["slug"]), timeout=timeout)
        module, _ = Module.objects.update_or_create(slug=row["slug"], defaults=row)
        modules[module.slug] = module
    return modules


# what the operator fixture may do: modules, probes, runs, spawns and cancels; not flow definitions
# (tests/flows' `editor` adds those) nor power (tests/power's `controller` has it)
OPERATOR_PERMISSIONS = [
    "fleet.add_module",
    "fleet.change_module",
    "fleet.delete_module",
    "flows.run_flow",
    "daughters.spawn_daughter",
    "daughters.change_daughtertask",
    "daughters.change_daughter",
]


def give(user, *perms: str):
    """Give `user` these permissions ("app.codename"); returns the user, reloaded so its permission cache is fresh."""
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    wanted = Q(pk__in=[])
    for perm in perms:
        app, codename = perm.split(".")
        wanted |= Q(content_type__app_label=app, codename=codename)
    found = list(Permission.objects.filter(wanted))
    assert len(found) == len(perms), f"unknown permission among {perms}"
    user.user_permissions.add(*found)
    return type(user).objects.get(pk=user.pk)


def database_url_of_test_db() -> str:
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_demo_offset() -> int:
    """A --port-offset at which every demo port (the ten modules and the control server) is free now; drawn at
    random per process, so two suites running at once do not pick the same one."""
    from apps.simfleet.sim import CONTROL_PORT, PORTS

    draw = random.Random(os.getpid() * 1_000_003 + time.monotonic_ns())
    for _ in range(50):
        offset = draw.randrange(1000, 50000, 100)  # the demo accepts up to 50000
        try:
            for port in [*PORTS.values(), CONTROL_PORT]:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return offset
    pytest.fail("no offset with eleven free ports in 50 tries")


def reset_celery_sender(app) -> None:
    """Drop the Celery app's cached connection pool, producer pool, queues and router, so the
    next send uses the current conf (kombu keeps one pool per broker URL; only references go)."""
    app._pool = None
    app.amqp._producer_pool = None
    for cached in ("queues", "router"):
        app.amqp.__dict__.pop(cached, None)


@contextlib.contextmanager
def celery_sends_to(broker: str, queue: str):
    """Point this process's Celery app (the sender) at a real broker and queue, then back."""
    from vx11_site.celery import app

    saved = {k: app.conf[k] for k in ("broker_url", "task_default_queue", "broker_transport_options")}
    app.conf.update(broker_url=broker, task_default_queue=queue, broker_transport_options={})
    reset_celery_sender(app)
    try:
        yield
    finally:
        app.conf.update(saved)
        reset_celery_sender(app)


class WorkerProcess:
    """A real `celery worker` on the test database and a private Redis queue."""

    def __init__(self, env: dict, name: str, log: Path):
        self.env, self.name, self.log, self.proc = env, name, log, None

    def start(self, concurrency: int = 4, ready_within: float = 60) -> "WorkerProcess":
        """Start and wait until the worker says it is ready, so a test's own timeouts never include
        the worker's start-up (seconds on a loaded machine)."""
        readies = self.log.read_text().count(" ready.") if self.log.exists() else 0
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "vx11_site",
                "worker",
                "-P",
                "threads",
                "-c",
                str(concurrency),
                "-l",
                "INFO",
                "-n",
                f"{self.name}-{time.monotonic_ns()}@%h",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + ready_within
        while self.log.read_text().count(" ready.") <= readies:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start:\n{self.output()}")
            time.sleep(0.1)
        return self

    def kill(self, sig=signal.SIGKILL) -> None:
        """Kill the worker's whole process group (SIGKILL: no warm shutdown, nothing acknowledged)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)

    def output(self) -> str:
        return self.log.read_text()[-4000:]


def redis_server(port: int) -> subprocess.Popen:
    """A private redis-server (no persistence) on `port`, answering; kill its process group to make an outage."""
    import redis

    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port, socket_connect_timeout=0.2).ping()
            return server
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.1)


def redis_layer(url: str, prefix: str) -> dict:
    """CHANNEL_LAYERS for a channels-redis layer at `url` whose keys start with `prefix` (a test's own groups)."""
    return {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url], "prefix": prefix}}
    }


@contextlib.contextmanager
def channel_layer(config: dict):
    """This process's channel layer built from `config` (CHANNEL_LAYERS), then the settings' own again."""
    from channels.layers import get_channel_layer

    with override_settings(CHANNEL_LAYERS=config):
        channel_layers.backends.clear()
        try:
            yield get_channel_layer()
        finally:
            channel_layers.backends.clear()


def ninja_namespaces() -> list[str]:
    """Every NinjaAPI the portal mounts (its /api/, madre's /madre/, any later one): the namespaces with a docs page.
    A function, not a constant: the URLconf loads when a test asks, not when conftest.py imports this module."""
    return [
        r.namespace
        for r in get_resolver().url_patterns
        if isinstance(r, URLResolver) and r.namespace and "openapi-view" in r.reverse_dict
    ]


def docs_urls() -> list[str]:
    return [reverse(f"{namespace}:openapi-view") for namespace in ninja_namespaces()]


def parameterless(patterns) -> list[str]:
    """Names of a ModelAdmin's URL patterns that take no argument: its list, add page and own views
    (the power console, the flow file upload, ...)."""
    return [p.name for p in patterns if isinstance(p, URLPattern) and not p.pattern.converters and p.name]


def admin_pages(user) -> list[str]:
    """Every admin page a superuser may open, found from the admin's registry and each ModelAdmin's URLs."""
    request = RequestFactory().get("/admin/")
    request.user = user
    pages = [reverse("admin:index"), reverse("admin:password_change")]
    app_labels = sorted({model._meta.app_label for model in admin.site._registry})
    pages += [reverse("admin:app_list", args=[label]) for label in app_labels]
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        for name in parameterless(model_admin.get_urls()):
            if name.endswith("_add") and not model_admin.has_add_permission(request):
                continue  # records the portal writes itself: the add page is a 403 by design
            pages.append(reverse(f"admin:{name}"))
        sample = model_admin.get_queryset(request).order_by("pk").first()
        if sample is None:
            continue
        for view in ("change", "history"):
            pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[sample.pk]))
        if model_admin.has_delete_permission(request, sample):
            pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_delete", args=[sample.pk]))
    return pages
