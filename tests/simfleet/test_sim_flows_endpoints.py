"""The demo fleet's E2E endpoints (flows A, B, C): tentaculo_link's /vx11/* proxy, madre's intents
and plans (IntentV2/PlanV2), hormiguero's scan and incidents, manifestator's drift and patches.
Real HTTP against `sim` (tests/conftest.py); every answer carries X-VX11-Simulated: 1."""

import httpx
import pytest

from apps.simfleet.sim import ANTS, FS_DRIFT, Memory

T = 2.0
INTENT_KEYS = {"intent_id", "session_id", "mode", "dsl", "risk", "requires_confirmation", "targets"}
PLAN_KEYS = {"plan_id", "intent_id", "session_id", "status", "steps", "created_at"}
STEP_KEYS = {"type", "payload", "blocking", "status", "result", "error"}


def url(sim, slug, path):
    return sim.base_url(slug) + path


def intent(sim, via="madre", **body):
    return httpx.post(url(sim, via, "/vx11/intent"), json={"text": "status of switch", **body}, timeout=T)


# -- tentaculo_link ------------------------------------------------------------------------------


def test_gateway_proxies_to_the_module_named_in_the_path(sim):
    response = httpx.get(url(sim, "tentaculo_link", "/vx11/hermes/tools"), timeout=T)
    assert response.status_code == 200
    assert response.headers["X-VX11-Simulated"] == "1"
    assert response.headers["X-VX11-Upstream"] == "hermes"
    assert "cli_tools" in response.json()
    assert httpx.get(url(sim, "tentaculo_link", "/vx11/switch/health"), timeout=T).json()["module"] == "switch"


def test_gateway_sends_intents_and_results_to_madre(sim):
    body = intent(sim, via="tentaculo_link").json()
    assert body["status"] == "DONE"
    assert set(body["intent"]) == INTENT_KEYS
    result = httpx.get(url(sim, "tentaculo_link", f"/vx11/result/{body['correlation_id']}"), timeout=T).json()
    assert result == {
        "correlation_id": body["correlation_id"],
        "intent_id": body["intent"]["intent_id"],
        "plan_id": body["plan"]["plan_id"],
        "status": "DONE",
    }


def test_gateway_passes_the_query_string_and_upstream_errors_through(sim):
    assert (
        httpx.get(url(sim, "tentaculo_link", "/vx11/manifestator/drift?correlation_id=nope"), timeout=T).status_code
        == 404
    )
    sim.set_mode("madre", "error")
    assert intent(sim, via="tentaculo_link").status_code == 500


def test_gateway_answers_502_for_a_down_module_and_504_for_a_hanging_one(sim, monkeypatch):
    import apps.simfleet.sim as simmod

    sim.set_mode("hermes", "down")
    response = httpx.get(url(sim, "tentaculo_link", "/vx11/hermes/tools"), timeout=T)
    assert response.status_code == 502
    assert response.json() == {"detail": "upstream hermes unreachable: ClientConnectorError"}
    assert response.headers["X-VX11-Simulated"] == "1"

    monkeypatch.setattr(simmod, "PROXY_TIMEOUT", 0.2)
    sim.set_mode("hermes", "hang")
    response = httpx.get(url(sim, "tentaculo_link", "/vx11/hermes/tools"), timeout=T)
    assert response.status_code == 504
    assert response.json()["detail"] == "upstream hermes timed out after 0.2 s"


@pytest.mark.parametrize("path", ["/vx11/nosuch/health", "/vx11/tentaculo_link/health", "/vx11/"])
def test_gateway_404s_an_unknown_upstream(sim, path):
    response = httpx.get(url(sim, "tentaculo_link", path), timeout=T)
    assert response.status_code == 404
    assert "no upstream" in response.json()["detail"]


def test_the_gateway_itself_obeys_its_mode(sim):
    sim.set_mode("tentaculo_link", "garbage")
    assert (
        httpx.get(url(sim, "tentaculo_link", "/vx11/hermes/tools"), timeout=T)
        .headers["content-type"]
        .startswith("text/plain")
    )


# -- madre ---------------------------------------------------------------------------------------


def test_a_low_risk_intent_is_planned_and_done(sim):
    body = intent(sim, session_id="s-1").json()
    i, plan = body["intent"], body["plan"]
    assert (i["session_id"], i["mode"], i["risk"], i["requires_confirmation"], i["targets"]) == (
        "s-1",
        "MADRE",
        "LOW",
        False,
        ["switch"],
    )
    assert set(i["dsl"]) == {"domain", "action", "parameters", "confidence", "original_text"}
    assert i["dsl"]["action"] == "status"
    assert set(plan) == PLAN_KEYS
    assert plan["status"] == "DONE"
    assert plan["intent_id"] == i["intent_id"]
    assert [s["type"] for s in plan["steps"]] == ["SYSTEM_HEALTHCHECK", "CALL_SWITCH", "NOOP"]
    assert all(set(s) == STEP_KEYS and s["status"] == "done" for s in plan["steps"])
    assert plan["steps"][-1]["payload"] == {"reason": "plan_complete"}
    assert httpx.get(url(sim, "madre", f"/madre/plans/{plan['plan_id']}"), timeout=T).json() == plan


def test_the_spawner_requirement_queues_the_plan(sim):
    body = intent(sim, text="run a check", require={"spawner": True}).json()
    assert body["status"] == "QUEUED"
    assert body["plan"]["status"] == "RUNNING"
    spawn = [s for s in body["plan"]["steps"] if s["type"] == "SPAWNER_REQUEST"]
    assert len(spawn) == 1
    assert spawn[0]["status"] == "queued"


def test_a_risky_intent_waits_for_confirmation(sim):
    body = intent(sim, text="restart hermes", mode="AUDIO_ENGINEER").json()
    assert (body["intent"]["risk"], body["intent"]["requires_confirmation"], body["status"]) == ("MED", True, "WAITING")
    types = [s["type"] for s in body["plan"]["steps"]]
    assert types == ["SYSTEM_HEALTHCHECK", "NOOP", "CALL_SHUB", "NOOP"]
    assert body["plan"]["steps"][1]["blocking"] is True
    confirmed = httpx.post(url(sim, "madre", f"/madre/plans/{body['plan']['plan_id']}/confirm"), timeout=T)
    assert confirmed.json()["status"] == "DONE"
    again = httpx.post(url(sim, "madre", f"/madre/plans/{body['plan']['plan_id']}/confirm"), timeout=T)
    assert again.status_code == 409


def test_stopping_madre_or_the_gateway_is_denied(sim):
    response = intent(sim, text="stop madre now")
    assert response.status_code == 403
    assert response.json() == {"detail": "stop on madre is denied"}
    assert intent(sim, text="kill hermes").json()["intent"]["risk"] == "HIGH"


@pytest.mark.parametrize(
    "body",
    [{}, {"text": ""}, {"text": "x", "mode": "LOUD"}, {"text": "x", "require": ["spawner"]}, {"text": "x" * 2001}],
)
def test_a_bad_intent_is_a_422(sim, body):
    response = httpx.post(url(sim, "madre", "/vx11/intent"), json=body, timeout=T)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_madre_lists_plans_and_404s_unknown_ones(sim):
    plan_id = intent(sim).json()["plan"]["plan_id"]
    assert plan_id in [p["plan_id"] for p in httpx.get(url(sim, "madre", "/madre/plans"), timeout=T).json()["plans"]]
    assert httpx.get(url(sim, "madre", "/madre/plans/nope"), timeout=T).status_code == 404
    assert httpx.get(url(sim, "madre", "/vx11/result/nope"), timeout=T).status_code == 404


def test_madre_garbage_mode_still_applies_to_the_new_endpoints(sim):
    sim.set_mode("madre", "garbage")
    response = intent(sim)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


# -- hormiguero and manifestator -----------------------------------------------------------------


def scan(sim, **body):
    return httpx.post(url(sim, "hormiguero", "/hormiguero/scan"), json=body or None, timeout=T)


def test_a_scan_runs_the_four_ants_and_reports_the_drift_incident(sim):
    body = scan(sim).json()
    assert [a["name"] for a in body["ants"]] == list(ANTS)
    assert body["status"] == "done"
    [incident] = body["incidents"]
    assert set(incident) == {
        "id",
        "kind",
        "severity",
        "status",
        "evidence",
        "correlation_id",
        "suggested_actions",
        "scan_id",
        "created_at",
        "patchplan",
        "patchplan_error",
    }
    assert (incident["kind"], incident["status"], incident["suggested_actions"]) == (
        "fs_drift",
        "open",
        ["manifestator_patch"],
    )
    stored = httpx.get(url(sim, "hormiguero", f"/hormiguero/incidents/{incident['id']}"), timeout=T).json()
    assert stored == incident
    assert (
        incident
        in httpx.get(url(sim, "hormiguero", "/hormiguero/incidents?status=open"), timeout=T).json()["incidents"]
    )


def test_the_health_ant_reports_dead_siblings(sim):
    sim.set_mode("spawner", "down")
    body = scan(sim, ants=["health"]).json()
    assert [(i["kind"], i["evidence"]) for i in body["incidents"]] == [("health", {"down": ["spawner"]})]


@pytest.mark.parametrize("body", [{"ants": []}, {"ants": ["termite"]}, {"ants": "fs_drift"}])
def test_a_bad_scan_is_a_422(sim, body):
    assert scan(sim, **body).status_code == 422


def test_manifestator_answers_drift_and_a_patch_for_the_incident(sim):
    incident = scan(sim, ants=["fs_drift"]).json()["incidents"][0]
    drift = httpx.get(
        url(sim, "manifestator", "/drift"), params={"correlation_id": incident["correlation_id"]}, timeout=T
    ).json()
    assert (drift["status"], drift["correlation_id"], drift["modules"]) == (
        "drift_detected",
        incident["correlation_id"],
        FS_DRIFT,
    )
    patch = httpx.post(
        url(sim, "manifestator", "/generate-patch"),
        json={"drift_id": drift["drift_id"], "correlation_id": incident["correlation_id"]},
        timeout=T,
    ).json()
    assert (patch["status"], patch["drift_id"]) == ("proposed", drift["drift_id"])
    assert patch["operations"] == [
        {"op": "add", "path": "/shubniggurath/engines/", "value": {"type": "dir"}},
        {"op": "remove", "path": "/switch/hermes/tmp_cache/"},
        {"op": "replace", "path": "/hermes/main.py", "value": {"type": "file"}},
    ]


@pytest.mark.parametrize(
    "body, status", [({}, 422), ({"drift_id": "drift-0"}, 404), ({"correlation_id": "nope"}, 404), (None, 422)]
)
def test_a_bad_patch_request_is_refused(sim, body, status):
    response = httpx.post(url(sim, "manifestator", "/generate-patch"), json=body, timeout=T)
    assert response.status_code == status
    assert response.json()["detail"]


def test_manifestator_health_is_unchanged(sim):
    assert httpx.get(url(sim, "manifestator", "/health"), timeout=T).json() == {
        "status": "healthy",
        "service": "manifestator",
    }


def test_memory_is_bounded():
    memory = Memory(size=3)
    for i in range(5):
        memory.put("plans", i, {"n": i})
    assert [p["n"] for p in memory.values("plans")] == [2, 3, 4]
    assert memory.get("plans", 0) is None
