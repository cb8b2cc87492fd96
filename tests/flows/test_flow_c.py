"""Flow C (hormiguero -> manifestator) against the demo fleet: passes; a hanging manifestator fails
the drift step on its timeout; a hormiguero scan with no incident fails the capture."""

from tests.flows.helpers import STEP_TIMEOUT, reason_of, steps_of


def test_flow_c_passes(flows):
    run = flows["C"].run(trigger="api")

    assert run.status == "passed", run.reason
    assert steps_of(run) == [(n, "passed") for n in range(1, 5)]
    scan = run.steps.get(position=1).captured
    patch = run.steps.get(position=4)
    assert isinstance(scan["incident_id"], int)
    assert len(scan["correlation_id"]) == 36
    assert f'"correlation_id": "{scan["correlation_id"]}"' in run.steps.get(position=4).request["body"]
    assert patch.captured["patch_id"].startswith("patch-")


def test_flow_c_fails_at_drift_when_manifestator_hangs(flows, sim):
    sim.set_mode("manifestator", "hang")

    run = flows["C"].run(trigger="api")

    assert run.failed_step == 3
    assert steps_of(run) == [(1, "passed"), (2, "passed"), (3, "failed"), (4, "skipped")]
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
