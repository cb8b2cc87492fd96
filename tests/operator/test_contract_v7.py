"""The contract with VX11's operator backend v7: the keys and types its clients read, exactly, on every path
(GET /operator/vx11/overview, /operator/shub/dashboard, /operator/resources, WS /ws/{session_id}), up and with
the upstream module down. Each answer's keys are v7's own (REAL_*) plus the ones the portal adds (OURS_*), as
apps/operator/contract.py writes them down (the operator check of the autonomy pipeline reads the same sets)."""

import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings

from apps.operator import contract
from apps.operator.contract import (
    OFFLINE_CLI_TOOLS,
    OFFLINE_SHUB,
    OFFSET,
    OURS_CONNECTED,
    OURS_ENVELOPE,
    OURS_MODULE,
    OURS_OFFLINE,
    OURS_OVERVIEW,
    OURS_SHUB,
    REAL_CLI_TOOL,
    REAL_CONNECTED,
    REAL_ENVELOPE,
    REAL_ERROR,
    REAL_LOCAL_MODEL,
    REAL_MODULE,
    REAL_OVERVIEW,
    REAL_PROJECT,
    REAL_RESOURCES,
    REAL_SHUB,
    REAL_SHUB_RESOURCES,
)
from tests.helpers import TOKEN
from vx11_site.asgi import application

TEN = list(contract.TEN)


def get(client, path) -> dict:
    response = client.get(path)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()


def is_int(value) -> bool:
    return type(value) is int


# -- GET /operator/vx11/overview ----------------------------------------------------------------


def assert_overview_shape(body: dict) -> None:
    assert set(body) == REAL_OVERVIEW | OURS_OVERVIEW
    assert body["status"] in {"ok", "degraded", "partial"}
    assert is_int(body["healthy_modules"])
    assert body["total_modules"] == 10
    assert list(body["modules"]) == TEN
    for slug, entry in body["modules"].items():
        assert set(entry) == REAL_MODULE | OURS_MODULE | ({"version"} if slug == "operator" else set())
        assert entry["status"] in {"ok", "offline"}
    assert body["modules"]["operator"]["version"] == "7.0"
    assert body["healthy_modules"] == sum(entry["status"] == "ok" for entry in body["modules"].values())
    assert OFFSET.search(body["checked_at"])


def test_overview_all_up(fleet, client):
    body = get(client, "/operator/vx11/overview")
    assert_overview_shape(body)
    assert (body["status"], body["healthy_modules"]) == ("ok", 10)
    assert all(OFFSET.search(entry["checked_at"]) for entry in body["modules"].values())


@pytest.mark.parametrize("slug, status", [("hermes", "degraded"), ("madre", "partial"), ("operator", "degraded")])
def test_overview_with_a_module_down(fleet, client, sim, slug, status):
    sim.set_mode(slug, "down")
    body = get(client, "/operator/vx11/overview")  # never checked before: probed now, so down at once
    assert_overview_shape(body)
    assert (body["status"], body["healthy_modules"]) == (status, 9)
    assert body["modules"][slug]["status"] == "offline"


# -- GET /operator/shub/dashboard ---------------------------------------------------------------


def assert_shub_shape(body: dict, offline: bool) -> None:
    assert set(body) == REAL_SHUB | OURS_SHUB | (OURS_OFFLINE if offline else set())
    assert body["shub_health"] in {"ok", "offline"}
    assert is_int(body["active_sessions"])
    assert all(set(project) == REAL_PROJECT for project in body["projects"])
    assert set(body["resources"]) == REAL_SHUB_RESOURCES
    assert type(body["resources"]["cpu_percent"]) is float
    assert is_int(body["resources"]["memory_mb"])


def test_shub_dashboard_up(fleet, client):
    body = get(client, "/operator/shub/dashboard")
    assert_shub_shape(body, offline=False)
    assert (body["status"], body["shub_health"], body["shub_health_detail"]["status"]) == ("ok", "ok", "ok")
    assert body["projects"]


@pytest.mark.parametrize("mode", ["down", "hang", "error", "garbage", "wrong_status"])
def test_shub_dashboard_offline(fleet, client, sim, mode):
    sim.set_mode("shub", mode)
    body = get(client, "/operator/shub/dashboard")
    assert_shub_shape(body, offline=True)
    assert body == {**OFFLINE_SHUB, "error": body["error"]}


HEALTH_OK = '{"status": "ok"}'


@pytest.mark.parametrize(
    "resources, cpu_percent, memory_mb",
    [('{"cpu_percent": 7, "memory_mb": 511.6}', 7.0, 512), ('{"cpu_percent": 0.25, "memory_mb": 300}', 0.25, 300)],
)
def test_shub_resources_take_v7_types_whatever_shub_sends(scripted_module, client, resources, cpu_percent, memory_mb):
    scripted_module("shub", {"/health": HEALTH_OK, "/metrics": f'{{"active_sessions": 1, "resources": {resources}}}'})
    body = get(client, "/operator/shub/dashboard")
    assert_shub_shape(body, offline=False)
    assert body["resources"] == {"cpu_percent": cpu_percent, "memory_mb": memory_mb}


@pytest.mark.parametrize(
    "resources, error",
    [
        ('{"cpu_percent": 1.0, "memory_mb": "lots"}', "shub POST /metrics memory_mb: expected a number, got 'lots'"),
        ('{"cpu_percent": NaN, "memory_mb": 1}', "shub POST /metrics cpu_percent: expected a number, got nan"),
        ('{"cpu_percent": 1.0, "memory_mb": Infinity}', "shub POST /metrics memory_mb: expected a number, got inf"),
        ('{"cpu_percent": true, "memory_mb": 1}', "shub POST /metrics cpu_percent: expected a number, got True"),
    ],
)
def test_shub_resources_that_are_not_numbers_give_the_offline_shape(scripted_module, client, resources, error):
    scripted_module("shub", {"/health": HEALTH_OK, "/metrics": f'{{"active_sessions": 1, "resources": {resources}}}'})
    body = get(client, "/operator/shub/dashboard")
    assert_shub_shape(body, offline=True)
    assert (body["status"], body["error"]) == ("offline", error)


# -- GET /operator/resources --------------------------------------------------------------------


def assert_resources_shape(body: dict, offline: bool) -> None:
    assert set(body) == REAL_RESOURCES | (OURS_OFFLINE if offline else set())
    assert body["status"] == ("offline" if offline else "ok")
    assert body["cli_tools"]
    for tool in body["cli_tools"]:
        assert set(tool) == REAL_CLI_TOOL
        assert type(tool["available"]) is bool
    for model in body["local_models"]:
        assert set(model) == REAL_LOCAL_MODEL
        assert type(model["loaded"]) is bool
    assert (body["max_tokens"], body["available_tokens"]) == (1000, 950)


def test_resources_up(fleet, client):
    body = get(client, "/operator/resources")
    assert_resources_shape(body, offline=False)
    assert body["local_models"]


@pytest.mark.parametrize("mode", ["down", "error", "garbage", "wrong_status"])
def test_resources_offline(fleet, client, sim, mode):
    sim.set_mode("hermes", mode)
    body = get(client, "/operator/resources")
    assert_resources_shape(body, offline=True)
    assert (body["cli_tools"], body["local_models"]) == (OFFLINE_CLI_TOOLS, [])


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/operator/vx11/overview", "/operator/shub/dashboard", "/operator/resources"])
@pytest.mark.parametrize("headers, status", [({}, 401), ({"X-VX11-Token": "wrong"}, 403)])
def test_auth_failures_answer_the_v7_error_shape(fleet, path, headers, status):
    response = Client(headers=headers).get(path)
    assert response.status_code == status
    assert set(response.json()) == REAL_ERROR
    assert response.json()["status_code"] == status


# -- WS /ws/{session_id} ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ws_connected_frame_then_event_envelopes():
    async def session():
        comm = WebsocketCommunicator(application, f"/ws/contract?token={TOKEN}")
        connected, _ = await comm.connect()
        assert connected
        hello = json.loads(await comm.receive_from(timeout=3))
        assert set(hello) == REAL_CONNECTED | OURS_CONNECTED
        assert (hello["channel"], hello["type"], hello["session_id"]) == ("control", "connected", "contract")
        await comm.send_to(text_data=json.dumps({"event_type": "plan_updated", "data": {"plan_id": "p1"}}))
        envelope = json.loads(await comm.receive_from(timeout=3))
        assert set(envelope) == REAL_ENVELOPE | OURS_ENVELOPE
        assert (envelope["type"], envelope["session_id"]) == ("plan_updated", "contract")
        assert envelope["data"] == {"plan_id": "p1", "client_id": hello["client_id"]}
        assert envelope["timestamp"].endswith("Z")
        await comm.disconnect()

    override_settings(VX11_TOKEN=TOKEN)(async_to_sync(session))()


@pytest.mark.django_db(transaction=True)
def test_ws_without_a_token_is_refused():
    """A deliberate difference: v7 let anyone subscribe."""

    async def session():
        comm = WebsocketCommunicator(application, "/ws/contract")
        await comm.connect()
        notice = json.loads(await comm.receive_from(timeout=3))
        closed = await comm.receive_output(timeout=3)
        assert (notice["type"], notice["error"], closed["code"]) == ("closing", "auth_required", 4401)

    override_settings(VX11_TOKEN=TOKEN)(async_to_sync(session))()
