"""The usual world, made once here so each test file reads as the behaviour it checks.

- `sim`: the demo fleet (apps.simfleet) on ephemeral ports, one per test session; every
  module is reset to "ok" after each test.
- `fleet`: the ten reference modules pointed at `sim`, with a short timeout.
- `admin_user`, `operator_key` (read-write, with OPERATOR_PERMISSIONS) / `readonly_key` / `plain_key` (read-write,
  no permission), `api` clients; `grant(user, "app.codename", ...)`.
"""

import contextlib
import json
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
from django.db import connection
from django.test import Client, override_settings

from apps.accounts.models import ApiKey
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


def point_fleet_at(sim, timeout: float = TEST_TIMEOUT) -> dict[str, Module]:
    modules = {}
    for row in reference_rows():
        row.update(base_url=sim.base_url(row["slug"]), timeout=timeout)
        module, _ = Module.objects.update_or_create(slug=row["slug"], defaults=row)
        modules[module.slug] = module
    return modules


@pytest.fixture
def fleet(db, sim):
    return point_fleet_at(sim)


@pytest.fixture
def admin_user(db, django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-pass-123")


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


def _reset_celery_sender(app) -> None:
    """Drop the Celery app's cached connection pool, producer pool, queues and router, so the
    next send uses the current conf (kombu keeps one pool per broker URL; only references go)."""
    app._pool = None
    app.amqp._producer_pool = None
    for cached in ("queues", "router"):
        app.amqp.__dict__.pop(cached, None)


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
    _reset_celery_sender(app)
    yield
    app.conf.update(saved)
    _reset_celery_sender(app)
    if app.conf.broker_url.startswith("redis"):
        import redis

        redis.Redis.from_url(app.conf.broker_url).delete(changes["task_default_queue"])


@contextlib.contextmanager
def celery_sends_to(broker: str, queue: str):
    """Point this process's Celery app (the sender) at a real broker and queue, then back."""
    from vx11_site.celery import app

    saved = {k: app.conf[k] for k in ("broker_url", "task_default_queue", "broker_transport_options")}
    app.conf.update(broker_url=broker, task_default_queue=queue, broker_transport_options={})
    _reset_celery_sender(app)
    try:
        yield
    finally:
        app.conf.update(saved)
        _reset_celery_sender(app)


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
