"""Flow C (hormiguero -> manifestator) against the demo fleet: passes, the fs_drift incident carrying
manifestator's patch plan; a hanging manifestator fails the drift step on its timeout; a hormiguero that
errors fails the scan; a patch plan manifestator could not give fails the last step."""

import json

import apps.simfleet.sim as simfleet
from tests.flows.helpers import STEP_TIMEOUT, reason_of, steps_of


def test_flow_c_passes(flows):
    run = flows["C"].run(trigger="api")

    assert run.status == "passed", run.reason
    assert steps_of(run) == [(n, "passed") for n in range(1, 6)]
    scan = run.steps.get(position=1).captured
    patch = run.steps.get(position=4)
    assert isinstance(scan["incident_id"], int)
    assert len(scan["correlation_id"]) == 36
    assert f'"correlation_id": "{scan["correlation_id"]}"' in run.steps.get(position=4).request["body"]
    assert patch.captured["patch_id"].startswith("patch-")
    assert run.steps.get(position=5).request["url"].endswith(f"/hormiguero/incidents/{scan['incident_id']}")
    plan = json.loads(run.steps.get(position=5).response_excerpt)["patchplan"]
    assert [a["action"] for a in plan["actions"]] == ["add", "remove", "verify"]


def test_flow_c_fails_at_drift_when_manifestator_hangs(flows, sim, monkeypatch):
    monkeypatch.setattr(simfleet, "QUEEN_TIMEOUT", 0.1)  # the scan goes on without a plan within the step timeout
    sim.set_mode("manifestator", "hang")

    run = flows["C"].run(trigger="api")

    assert run.failed_step == 3
    assert steps_of(run) == [(1, "passed"), (2, "passed"), (3, "failed"), (4, "skipped"), (5, "skipped")]
    correlation_id = run.steps.get(position=1).captured["correlation_id"]
    assert reason_of(run, 3) == (
        f"manifestator did not answer GET /drift?correlation_id={correlation_id} within {STEP_TIMEOUT:g} s"
    )
    assert STEP_TIMEOUT * 1000 <= run.steps.get(position=3).duration_ms < STEP_TIMEOUT * 1000 + 1500


def test_flow_c_fails_at_the_scan_when_hormiguero_errors(flows, sim):
    sim.set_mode("hormiguero", "error")

    run = flows["C"].run(trigger="api")

    assert run.failed_step == 1
    assert reason_of(run, 1) == "expected status 200, got 500: simulated internal error in hormiguero"


def test_flow_c_fails_at_the_plan_when_manifestator_was_down_during_the_scan(flows, sim):
    """manifestator comes back in time for /drift and /generate-patch, but the scan's incident has no plan."""

    def back_after_the_scan(result):
        if result.position == 1:
            sim.set_mode("manifestator", "ok")

    sim.set_mode("manifestator", "down")
    run = flows["C"].run(trigger="api", on_step=back_after_the_scan)

    assert steps_of(run) == [(n, "passed") for n in range(1, 5)] + [(5, "failed")]
    assert reason_of(run, 5) == ("$.patchplan.plan_id is missing from the response (expected regex '^[0-9a-f-]{36}$')")
    assert (
        '"patchplan_error": "manifestator unreachable: ClientConnectorError"'
        in run.steps.get(position=5).response_excerpt
    )
