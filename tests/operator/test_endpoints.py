"""The v7 operator HTTP endpoints against the simulated fleet: auth, overview, shub dashboard, resources."""

import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.fleet.models import HealthCheck, Module, State
from apps.operator.contract import OFFLINE_RESOURCES, OFFLINE_SHUB
from apps.simfleet.sim import HEALTH, HERMES_TOOLS, SimFleet
from tests.helpers import TOKEN

ENDPOINTS = ["/operator/vx11/overview", "/operator/shub/dashboard", "/operator/resources"]


def get(client, path):
    response = client.get(path)
    assert response.status_code == 200, response.content
    return response.json()


def timed_get(client, path):
    started = time.monotonic()
    body = get(client, path)
    return body, time.monotonic() - started


def mark_checked(ago: timedelta, state=State.UP, **filters):
    Module.objects.filter(**filters).update(last_checked_at=timezone.now() - ago, state=state)


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
def test_missing_token_is_401(fleet, path):
    response = Client().get(path)
    assert response.status_code == 401
    assert response.json() == {"error": "auth_required", "status_code": 401}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_wrong_token_is_403(fleet, path):
    response = Client(headers={"X-VX11-Token": "nope"}).get(path)
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "status_code": 403}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_token_in_query_string_is_not_accepted(fleet, path):
    response = Client().get(path, {"token": TOKEN})
    assert response.status_code == 401


@pytest.mark.parametrize("path", ENDPOINTS)
def test_right_token_is_200(fleet, client, path):
    assert client.get(path).status_code == 200


def test_post_is_405_in_v7_shape(fleet, client):
    response = client.post("/operator/resources")
    assert response.status_code == 405
    assert response.json() == {"error": "method_not_allowed", "status_code": 405}


# -- overview -----------------------------------------------------------------------------------


def test_overview_all_up(fleet, client):
    body = get(client, "/operator/vx11/overview")
    assert body["status"] == "ok"
    assert body["healthy_modules"] == body["total_modules"] == 10
    assert set(body["modules"]) == set(fleet)
    for entry in body["modules"].values():
        assert entry["status"] == "ok"
        assert entry["state"] == "up"
        assert entry["latency_ms"] is not None
        assert entry["checked_at"]
    assert body["modules"]["operator"]["version"] == "7.0"
    assert body["checked_at"]


def test_overview_never_checked_modules_are_probed_for_real(fleet, client, sim):
    sim.set_mode("hermes", "down")
    assert HealthCheck.objects.count() == 0
    body = get(client, "/operator/vx11/overview")
    assert HealthCheck.objects.count() == 10
    assert body["status"] == "degraded"  # hermes is not core
    assert body["healthy_modules"] == 9
    assert body["total_modules"] == 10
    assert body["modules"]["hermes"] == {
        **body["modules"]["hermes"],
        "status": "offline",
        "state": "down",
        "latency_ms": None,
    }


def test_overview_core_module_down_is_partial(fleet, client, sim):
    sim.set_mode("madre", "error")
    body = get(client, "/operator/vx11/overview")
    assert body["status"] == "partial"
    assert body["modules"]["madre"]["status"] == "offline"
    assert body["healthy_modules"] == 9


def test_overview_stale_data_is_reprobed(fleet, client, sim):
    mark_checked(timedelta(seconds=120))
    Module.objects.filter(slug="hermes").update(down_after=1)
    sim.set_mode("hermes", "down")
    body = get(client, "/operator/vx11/overview")
    assert HealthCheck.objects.count() == 10
    assert body["modules"]["hermes"]["status"] == "offline"
    assert body["status"] == "degraded"
    assert body["healthy_modules"] == 9


def test_overview_one_failure_does_not_flip_an_up_module(fleet, client, sim):
    """The overview follows fleet state, which needs down_after (3) failures in a row."""
    mark_checked(timedelta(seconds=120))
    sim.set_mode("hermes", "down")
    body = get(client, "/operator/vx11/overview")
    assert body["modules"]["hermes"]["status"] == "ok"
    assert Module.objects.get(slug="hermes").last_error == "connection refused"


def test_overview_fresh_data_is_not_reprobed(fleet, client, sim):
    mark_checked(timedelta(seconds=5))
    sim.set_mode("hermes", "down")
    body = get(client, "/operator/vx11/overview")
    assert HealthCheck.objects.count() == 0
    assert body["status"] == "ok"
    assert body["healthy_modules"] == 10


def test_overview_probes_only_the_stale_modules(fleet, client):
    mark_checked(timedelta(seconds=5))
    mark_checked(timedelta(seconds=300), slug__in=["shub", "mcp"])
    get(client, "/operator/vx11/overview")
    assert sorted(HealthCheck.objects.values_list("module__slug", flat=True)) == ["mcp", "shub"]


def test_overview_shows_a_disabled_module_offline_without_probing_it(fleet, client):
    mark_checked(timedelta(seconds=5))
    Module.objects.filter(slug="operator").update(enabled=False, last_checked_at=None)
    body = get(client, "/operator/vx11/overview")
    assert HealthCheck.objects.count() == 0
    assert (body["status"], body["healthy_modules"], body["total_modules"]) == ("degraded", 9, 10)
    assert body["modules"]["operator"] == {
        "status": "offline",
        "state": "disabled",
        "latency_ms": None,
        "checked_at": None,
        "version": "7.0",
    }


def test_overview_shows_a_module_missing_from_the_registry_offline(fleet, client):
    mark_checked(timedelta(seconds=5))
    Module.objects.filter(slug="spawner").delete()
    body = get(client, "/operator/vx11/overview")
    assert body["status"] == "partial"  # spawner is core
    assert (body["healthy_modules"], body["total_modules"]) == (9, 10)
    assert body["modules"]["spawner"] == {
        "status": "offline",
        "state": "missing",
        "latency_ms": None,
        "checked_at": None,
    }


def test_overview_lists_the_ten_modules_in_order_then_the_registry_s_others(fleet, client, sim):
    mark_checked(timedelta(seconds=5))
    Module.objects.create(slug="zeta", name="Zeta", base_url=sim.base_url("madre"), timeout=0.5)
    body = get(client, "/operator/vx11/overview")
    assert list(body["modules"]) == [
        "tentaculo_link",
        "madre",
        "switch",
        "hermes",
        "hormiguero",
        "manifestator",
        "mcp",
        "shub",
        "spawner",
        "operator",
        "zeta",
    ]
    assert (body["status"], body["healthy_modules"], body["total_modules"]) == ("ok", 11, 11)
    assert HealthCheck.objects.get().module.slug == "zeta"  # never checked, so probed


# -- shub dashboard -----------------------------------------------------------------------------


def test_shub_dashboard_up(fleet, client):
    body = get(client, "/operator/shub/dashboard")
    assert body == {
        "status": "ok",
        "shub_health": "ok",
        "shub_health_detail": HEALTH["shub"],
        "active_sessions": 2,
        "projects": [{"id": "proj-001", "name": "Demo mix"}, {"id": "proj-002", "name": "Podcast master"}],
        "resources": {"cpu_percent": 12.5, "memory_mb": 512},
    }
    assert type(body["resources"]["memory_mb"]) is int  # the simulated shub sends 512.0


@pytest.mark.parametrize(
    "mode, error",
    [
        ("down", "shub GET /health: connection refused"),
        ("garbage", "shub GET /health: invalid JSON"),
        ("error", "shub GET /health: HTTP 500"),
        ("wrong_status", "shub /health reports status 'broken'"),
    ],
)
def test_shub_dashboard_offline_fallback(fleet, client, sim, mode, error):
    sim.set_mode("shub", mode)
    assert get(client, "/operator/shub/dashboard") == {**OFFLINE_SHUB, "error": error}


def test_shub_dashboard_hanging_gives_fallback_within_registry_timeout(fleet, client, sim):
    sim.set_mode("shub", "hang")
    body, elapsed = timed_get(client, "/operator/shub/dashboard")
    assert body == {**OFFLINE_SHUB, "error": "shub GET /health: timeout after 0.5 s"}
    assert 0.4 < elapsed < 1.5


def test_upstream_timeout_caps_the_registry_timeout(fleet, client, sim, settings):
    settings.VX11_UPSTREAM_TIMEOUT = 0.2
    sim.set_mode("shub", "hang")
    body, elapsed = timed_get(client, "/operator/shub/dashboard")
    assert body["error"] == "shub GET /health: timeout after 0.2 s"
    assert elapsed < 1.0


@pytest.fixture
def warming_shub(fleet):
    with SimFleet(ephemeral=True, shub_warmup=60) as warming:
        Module.objects.filter(slug="shub").update(base_url=warming.base_url("shub"))
        yield warming


def test_shub_dashboard_initializing(warming_shub, client):
    body = get(client, "/operator/shub/dashboard")
    assert body["status"] == "initializing"
    assert body["shub_health"] == "initializing"  # shub's own word, as v7 passes it on
    assert body["shub_health_detail"]["status"] == "initializing"
    assert body["active_sessions"] == 2
    assert body["resources"] == {"cpu_percent": 12.5, "memory_mb": 512}


# -- resources ----------------------------------------------------------------------------------


def test_resources_up(fleet, client):
    assert get(client, "/operator/resources") == {
        "status": "ok",
        "cli_tools": HERMES_TOOLS["cli_tools"],
        "local_models": HERMES_TOOLS["local_models"],
        "max_tokens": 1000,
        "available_tokens": 950,
    }


@pytest.mark.parametrize(
    "mode, error",
    [
        ("down", "hermes GET /health: connection refused"),
        ("garbage", "hermes GET /health: invalid JSON"),
        ("error", "hermes GET /health: HTTP 500"),
    ],
)
def test_resources_offline_fallback(fleet, client, sim, mode, error):
    sim.set_mode("hermes", mode)
    assert get(client, "/operator/resources") == {**OFFLINE_RESOURCES, "error": error}


def test_resources_hanging_gives_fallback_within_registry_timeout(fleet, client, sim):
    sim.set_mode("hermes", "hang")
    body, elapsed = timed_get(client, "/operator/resources")
    assert body == {**OFFLINE_RESOURCES, "error": "hermes GET /health: timeout after 0.5 s"}
    assert 0.4 < elapsed < 1.5


def test_slow_module_shares_one_budget_across_calls(fleet, client, sim):
    """Two calls of 0.3 s each do not fit a 0.5 s budget: the second one times out."""
    sim.set_mode("hermes", "slow", delay=0.3)
    body, elapsed = timed_get(client, "/operator/resources")
    assert body == {**OFFLINE_RESOURCES, "error": "hermes GET /tools: timeout after 0.5 s"}
    assert elapsed < 1.0


# -- registry -----------------------------------------------------------------------------------


def test_missing_registry_entry_gives_fallback(fleet, client):
    Module.objects.filter(slug="shub").delete()
    assert get(client, "/operator/shub/dashboard") == {**OFFLINE_SHUB, "error": "module 'shub' is not in the registry"}


def test_disabled_registry_entry_gives_fallback(fleet, client):
    Module.objects.filter(slug="hermes").update(enabled=False)
    body = get(client, "/operator/resources")
    assert body == {**OFFLINE_RESOURCES, "error": "module 'hermes' is not in the registry (it is disabled)"}


def test_registry_address_is_used(fleet, client, sim):
    """Pointing shub at hermes' port makes POST /metrics 404: the view follows the registry."""
    Module.objects.filter(slug="shub").update(base_url=sim.base_url("hermes"))
    body = get(client, "/operator/shub/dashboard")
    assert body == {**OFFLINE_SHUB, "error": "shub POST /metrics: HTTP 404"}
