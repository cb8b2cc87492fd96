"""The usual world, made once here so each test file reads as the behaviour it checks.

- `sim`: the demo fleet (apps.simfleet) on ephemeral ports, one per test session; every
  module is reset to "ok" after each test.
- `fleet`: the ten reference modules pointed at `sim`, with a short timeout.
- `admin_user`, `operator_key` / `readonly_key` (plain API keys), `api` clients.
"""

import os

import pytest
from django.test import Client

from apps.accounts.models import ApiKey
from apps.fleet.models import Module
from apps.fleet.reference import reference_rows

TEST_TIMEOUT = 0.5


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


@pytest.fixture
def operator_key(db, django_user_model):
    user = django_user_model.objects.create_user("operator", password="operator-pass-123", is_staff=True)
    return ApiKey.issue(user, "operator rw")[1]


@pytest.fixture
def readonly_key(db, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="viewer-pass-123")
    return ApiKey.issue(user, "viewer ro", read_only=True)[1]


@pytest.fixture
def api(operator_key):
    """A client that sends the operator's read-write key."""
    return Client(headers={"Authorization": f"Bearer {operator_key}"})
