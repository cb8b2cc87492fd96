"""The contract with VX11's manifestator and hormiguero's queen, as the demo fleet answers it: POST
/manifestator/patchplan gives the real plan `{plan_id, actions: [{action, target, reason}], risk,
estimated_time_sec, notes}` (one action per drifted path: missing -> add, extra -> remove, changed -> verify;
risk low under 3 actions, mid under 10, else high; 2 s per action), and a scan that finds fs_drift has asked
manifestator for one over HTTP, keeping it on the incident. Real HTTP against `sim` (tests/conftest.py)."""

import uuid

import httpx
import pytest

import apps.simfleet.sim as simfleet
from apps.simfleet.sim import FS_DRIFT

T = 2.0
REAL_PLAN = {"plan_id", "actions", "risk", "estimated_time_sec", "notes"}
REAL_ACTION = {"action", "target", "reason"}
REAL_INCIDENT = {
    "id",
    "kind",
    "severity",
    "status",
    "evidence",
    "correlation_id",
    "suggested_actions",
    "scan_id",
    "created_at",
}
OURS_FS_DRIFT = {"patchplan", "patchplan_error"}  # the real queen files the plan as the incident's suggestions
DEMO_ACTIONS = [
    {"action": "add", "target": "shubniggurath/engines/", "reason": "missing_from_canonical"},
    {"action": "remove", "target": "switch/hermes/tmp_cache/", "reason": "extra_not_in_canonical"},
    {"action": "verify", "target": "hermes/main.py", "reason": "changed_from_canonical"},
]


def patchplan(sim, body=None, via="manifestator"):
    path = "/manifestator/patchplan" if via == "manifestator" else "/vx11/manifestator/manifestator/patchplan"
    return httpx.post(sim.base_url(via) + path, json=body, timeout=T)


def scan(sim, ants=("fs_drift",)):
    response = httpx.post(sim.base_url("hormiguero") + "/hormiguero/scan", json={"ants": list(ants)}, timeout=T)
    assert response.status_code == 200
    assert response.json()["status"] == "done"
    return response.json()


def assert_plan_shape(plan: dict) -> None:
    assert set(plan) == REAL_PLAN
    assert str(uuid.UUID(plan["plan_id"])) == plan["plan_id"]
    assert all(set(action) == REAL_ACTION for action in plan["actions"])
    assert all(action["action"] in {"add", "remove", "verify"} for action in plan["actions"])
    assert plan["risk"] in {"low", "mid", "high"}
    assert type(plan["estimated_time_sec"]) is int
    assert isinstance(plan["notes"], str)


# -- POST /manifestator/patchplan ---------------------------------------------------------------


def test_a_plan_has_one_action_per_drifted_path(sim):
    body = {"drift_evidence": {"missing": ["a/"], "extra": ["b/", "c.txt"], "changed": ["d.py"]}, "scope": "global"}
    plan = patchplan(sim, body).json()
    assert_plan_shape(plan)
    assert plan["actions"] == [
        {"action": "add", "target": "a/", "reason": "missing_from_canonical"},
        {"action": "remove", "target": "b/", "reason": "extra_not_in_canonical"},
        {"action": "remove", "target": "c.txt", "reason": "extra_not_in_canonical"},
        {"action": "verify", "target": "d.py", "reason": "changed_from_canonical"},
    ]
    assert (plan["risk"], plan["estimated_time_sec"], plan["notes"]) == (
        "mid",
        8,
        "Plan for global scope with 4 actions",
    )


@pytest.mark.parametrize("count, risk", [(0, "low"), (2, "low"), (3, "mid"), (9, "mid"), (10, "high"), (25, "high")])
def test_the_risk_follows_the_number_of_actions(sim, count, risk):
    plan = patchplan(sim, {"drift_evidence": {"missing": [f"m{i}/" for i in range(count)]}}).json()
    assert_plan_shape(plan)
    assert (len(plan["actions"]), plan["risk"], plan["estimated_time_sec"]) == (count, risk, 2 * count)


def test_no_body_is_an_empty_local_plan_and_every_plan_is_new(sim):
    first, second = patchplan(sim).json(), patchplan(sim, {}).json()
    assert_plan_shape(first)
    assert (first["actions"], first["risk"], first["notes"]) == ([], "low", "Plan for local scope with 0 actions")
    assert first["plan_id"] != second["plan_id"]


def test_the_gateway_passes_patchplan_through(sim):
    response = patchplan(sim, {"drift_evidence": {"extra": ["x/"]}}, via="tentaculo_link")
    assert response.headers["X-VX11-Upstream"] == "manifestator"
    assert_plan_shape(response.json())


@pytest.mark.parametrize(
    "body",
    [
        {"drift_evidence": "missing"},
        {"drift_evidence": {"missing": "a/"}},
        {"drift_evidence": {"extra": [1]}},
        {"drift_evidence": {}, "scope": "galaxy"},
        [1],
    ],
)
def test_a_bad_plan_request_is_a_422(sim, body):
    response = patchplan(sim, body)
    assert response.status_code == 422
    assert response.json()["detail"]


# -- hormiguero's queen -------------------------------------------------------------------------


def test_a_scan_finding_fs_drift_carries_manifestator_s_plan(sim):
    [incident] = scan(sim)["incidents"]
    assert set(incident) == REAL_INCIDENT | OURS_FS_DRIFT
    assert incident["patchplan_error"] is None
    plan = incident["patchplan"]
    assert_plan_shape(plan)
    assert plan["actions"] == DEMO_ACTIONS
    assert [a["target"] for a in plan["actions"]] == [
        path for key in ("missing", "extra", "changed") for row in FS_DRIFT for path in row[key]
    ]
    assert (plan["risk"], plan["estimated_time_sec"], plan["notes"]) == (
        "mid",
        6,
        "Plan for local scope with 3 actions",
    )
    stored = httpx.get(sim.base_url("hormiguero") + f"/hormiguero/incidents/{incident['id']}", timeout=T).json()
    assert stored["patchplan"] == plan
    assert scan(sim)["incidents"][0]["patchplan"]["plan_id"] != plan["plan_id"]  # asked again, for the new finding


def test_only_fs_drift_asks_for_a_plan(sim):
    sim.set_mode("spawner", "down")
    [incident] = scan(sim, ants=["health", "db_sanity", "cpu_pressure"])["incidents"]
    assert incident["kind"] == "health"
    assert set(incident) == REAL_INCIDENT


@pytest.mark.parametrize(
    "mode, error",
    [
        ("down", "manifestator unreachable: ClientConnectorError"),
        ("error", "manifestator answered HTTP 500"),
        ("garbage", "manifestator answered invalid JSON"),
        ("hang", "manifestator timed out after 0.2 s"),
    ],
)
def test_the_scan_goes_on_without_a_plan_manifestator_cannot_give(sim, monkeypatch, mode, error):
    """The queen asked manifestator over HTTP: its misbehaviour shows on the incident, not on the scan."""
    monkeypatch.setattr(simfleet, "QUEEN_TIMEOUT", 0.2)
    sim.set_mode("manifestator", mode)
    [incident] = scan(sim)["incidents"]
    assert set(incident) == REAL_INCIDENT | OURS_FS_DRIFT
    assert (incident["kind"], incident["patchplan"], incident["patchplan_error"]) == ("fs_drift", None, error)
