"""The usual world, made once here so each test file reads as the behaviour it checks.

- `sim`: the demo fleet (apps.simfleet) on ephemeral ports, one per test session; every
  module is reset to "ok" after each test.
- `fleet`: the ten reference modules pointed at `sim`, with a short timeout.
- `admin_user`, `operator_key` (read-write, with OPERATOR_PERMISSIONS) / `readonly_key` / `plain_key` (read-write,
  no permission), `api` clients; `grant(user, "app.codename", ...)`.
- `superuser_client` (logged in as `admin_user`) and `sample_rows`: a row behind most admin change pages.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.contrib.auth.models import Group
from django.test import Client, override_settings
from django.utils import timezone

from apps.accounts.models import ApiKey
from apps.daughters.models import DaughterTask
from apps.fleet.models import MaintenanceWindow, Module, State, StateChange
from apps.fleet.reference import reference_rows
from apps.flows.models import Flow
from apps.metrics.models import TestRun
from apps.metrics.snapshot import take_snapshot
from apps.pipeline import runner as pipeline_runner
from apps.power.manager import refuse_request
from apps.power.models import ServiceControl
from tests.helpers import (
    OPERATOR_PERMISSIONS,
    ROOT,
    TOKEN,
    WorkerProcess,
    celery_sends_to,
    channel_layer,
    database_url_of_test_db,
    free_port,
    give,
    point_fleet_at,
    redis_layer,
    redis_url,
    reset_celery_sender,
)


@pytest.fixture(scope="session")
def sim_session():
    from apps.simfleet.sim import SimFleet

    fleet = SimFleet(ephemeral=True)
    fleet.start()
    yield fleet
    fleet.stop()


@pytest.fixture
def sim(sim_session):
    yield sim_session
    for slug in sim_session.ports:
        sim_session.set_mode(slug, "ok")


@pytest.fixture
def fleet(db, sim):
    return point_fleet_at(sim)


@pytest.fixture
def admin_user(db, django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-pass-123")


@pytest.fixture
def operator_key(db, django_user_model):
    user = django_user_model.objects.create_user("operator", password="operator-pass-123", is_staff=True)
    give(user, *OPERATOR_PERMISSIONS)
    return ApiKey.issue(user, "operator rw")[1]


@pytest.fixture
def grant(db):
    """`grant(user, "app.codename", ...)`: give a user permissions; returns it reloaded."""
    return give


@pytest.fixture
def plain_key(db, django_user_model):
    """A read-write key of a user without any permission: it may read, and every write is refused (403)."""
    user = django_user_model.objects.create_user("plain", password="plain-pass-123")
    return ApiKey.issue(user, "plain rw")[1]


@pytest.fixture
def readonly_key(db, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="viewer-pass-123")
    return ApiKey.issue(user, "viewer ro", read_only=True)[1]


@pytest.fixture
def api(operator_key):
    """A client that sends the operator's read-write key."""
    return Client(headers={"Authorization": f"Bearer {operator_key}"})


@pytest.fixture
def superuser_client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def sample_rows(admin_user, settings, tmp_path):
    """A row for most models' change pages, beyond what the migrations seed (modules, flows, schedules):
    made through the models' own APIs. Nothing reaches a worker: on_commit never runs inside the test's
    transaction."""
    settings.VX11_EVIDENCE_ROOT = tmp_path / "evidence"  # the power audit row writes its evidence folder
    modules = [Module.objects.update_or_create(slug=row["slug"], defaults=row)[0] for row in reference_rows()]
    now = timezone.now()
    StateChange.objects.create(module=modules[0], at=now, from_state=State.UNKNOWN, to_state=State.UP, reason="sample")
    window = MaintenanceWindow.objects.create(
        starts_at=now, ends_at=now + timedelta(hours=1), created_by=admin_user, reason="sample"
    )
    window.modules.add(modules[0])
    Group.objects.create(name="operators")
    ApiKey.issue(admin_user, "sample")
    DaughterTask.spawn("sleep", {"seconds": 1}, user=admin_user)
    Flow.objects.order_by("pk").first().queue(trigger="admin", user=admin_user)
    ServiceControl.objects.create(module=modules[0])
    refuse_request(admin_user, "start", modules[0].slug, {}, 403, "sample refusal")
    TestRun.objects.create(kind=TestRun.Kind.UNIT, passed=3, failed=1, source=TestRun.Source.JUNIT)
    take_snapshot(actor="sample")  # a scorecard behind its record's page, and the scorecard page with its metrics
    pipeline_runner.queue(pipeline_runner.start("admin", user=admin_user))  # a run's page with its seven phases
    return modules


@pytest.fixture
def daphne(transactional_db, tmp_path):
    """A real daphne process on the test database and the Redis channel layer; this process
    publishes on the same Redis, so events cross processes as in production."""
    broker = redis_url()
    port = free_port()
    # no scheduler watchdog: with no beat running it would announce a stall into the events a test reads
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "DATABASE_URL": database_url_of_test_db(),
        "REDIS_URL": broker,
        "VX11_TOKEN": TOKEN,
        "VX11_WATCHDOG_SECONDS": "0",
    }
    log = (tmp_path / "daphne.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vx11_site.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "daphne.log").read_text()
            time.sleep(0.2)
    layers = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [broker]}}}
    with override_settings(CHANNEL_LAYERS=layers, VX11_TOKEN=TOKEN):
        channel_layers.backends.clear()
        yield f"ws://127.0.0.1:{port}"
    channel_layers.backends.clear()
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="session", autouse=True)
def private_celery_queue(tmp_path_factory):
    """What tests send to Celery (a spawn's dispatch after commit) goes to a queue of this run's
    own, never to the demo's var/celery-broker.sqlite3 or the default Redis queue a running portal reads."""
    from vx11_site.celery import app

    saved = {k: app.conf[k] for k in ("task_default_queue", "broker_url")}
    changes = {"task_default_queue": f"tests-{os.getpid()}"}
    if app.conf.broker_url.startswith("vx11sqla"):
        changes["broker_url"] = f"vx11sqla+sqlite:///{tmp_path_factory.mktemp('celery-broker') / 'broker.sqlite3'}"
    app.conf.update(changes)
    reset_celery_sender(app)
    yield
    app.conf.update(saved)
    reset_celery_sender(app)
    if app.conf.broker_url.startswith("redis"):
        import redis

        redis.Redis.from_url(app.conf.broker_url).delete(changes["task_default_queue"])


@pytest.fixture
def daughter_worker(transactional_db, tmp_path, settings):
    """A Celery worker process on real Redis running daughters from the test database.

    Heartbeats every 0.2 s; the allow-list has `once-slow` (sleeps 30 s the first time it runs with
    a given marker file, returns at once after) for worker-loss drills."""
    broker = redis_url()
    queue = f"daughters-test-{os.getpid()}-{time.monotonic_ns()}"
    commands = {
        "once-slow": [
            sys.executable,
            "-c",
            "import os,sys,time; p=sys.argv[1]; first=not os.path.exists(p); "
            "open(p,'a').close(); time.sleep(30 if first else 0)",
        ]
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "DATABASE_URL": database_url_of_test_db(),
        "REDIS_URL": broker,
        "VX11_CELERY_QUEUE": queue,
        "VX11_DAUGHTER_HEARTBEAT_SECONDS": "0.2",
        "VX11_BROKER_VISIBILITY_TIMEOUT": "5",
        "VX11_DAUGHTER_COMMANDS": json.dumps(commands),
    }
    settings.VX11_DAUGHTER_COMMANDS = {**settings.VX11_DAUGHTER_COMMANDS, **commands}
    worker = WorkerProcess(env, "daughters-test", tmp_path / "worker.log").start()
    with celery_sends_to(broker, queue):
        yield worker
    worker.kill(signal.SIGTERM)
    import redis

    redis.Redis.from_url(broker).delete(queue)


@pytest.fixture
def dead_channel_layer():
    """A channels-redis layer on a port where nothing listens: every send is really refused."""
    with channel_layer(redis_layer(f"redis://127.0.0.1:{free_port()}/0", f"dead{os.getpid()}")) as layer:
        yield layer


def pytest_sessionfinish(session, exitstatus):
    """Django drops the SQLite test database; the -wal and -shm files beside it stay: remove them."""
    from django.conf import settings

    name = (settings.DATABASES["default"].get("TEST") or {}).get("NAME")
    if name and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        for suffix in ("-wal", "-shm"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)
