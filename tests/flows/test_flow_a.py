"""Flow A (gateway -> switch -> hermes -> madre) against the demo fleet: passes, and fails at the
right step with the right reason when hermes is down or madre answers garbage."""

from apps.events.models import Event
from apps.flows.models import FlowRun
from tests.flows.helpers import reason_of, steps_of


def test_flow_a_passes_and_stores_each_step(flows):
    run = flows["A"].run(trigger="api")

    assert run.status == FlowRun.Status.PASSED
    assert run.failed_step is None
    assert run.reason == ""
    assert steps_of(run) == [(n, "passed") for n in range(1, 6)]
    intent = run.steps.get(position=4)
    assert intent.request["method"] == "POST"
    assert intent.request["url"].endswith("/vx11/intent")
    assert intent.response_status == 200
    assert '"intent_id"' in intent.response_excerpt
    plan_id = intent.captured["plan_id"]
    plan = run.steps.get(position=5)
    assert plan.request["url"].endswith(f"/madre/plans/{plan_id}")  # the captured value reached the next step
    assert all(s.duration_ms > 0 for s in run.steps.all())
    assert run.captured["4"]["plan_id"] == plan_id
    assert run.duration_ms > 0
    assert run.finished_at >= run.started_at


def test_flow_a_publishes_its_run_and_steps(flows):
    run = flows["A"].run(trigger="api")

    changes = [
        e.data["status"] for e in Event.objects.filter(type="status_changed", data__source="flows", data__run_id=run.id)
    ]
    assert changes == ["running", "passed"]
    steps = [
        e.data["step"] for e in Event.objects.filter(type="plan_updated", data__source="flows", data__run_id=run.id)
    ]
    assert steps == [1, 2, 3, 4, 5]


def test_flow_a_fails_at_hermes_when_hermes_is_down(flows, sim):
    sim.set_mode("hermes", "down")

    run = flows["A"].run(trigger="api")

    assert run.status == "failed"
    assert run.failed_step == 3
    assert steps_of(run) == [(1, "passed"), (2, "passed"), (3, "failed"), (4, "skipped"), (5, "skipped")]
    assert reason_of(run, 3).startswith("expected status 200, got 502")
    assert "upstream hermes unreachable" in reason_of(run, 3)
    assert reason_of(run, 4) == "skipped: step 3 failed"
    assert run.reason.startswith("step 3 (hermes tools through the gateway): expected status 200, got 502")


def test_flow_a_fails_at_the_intent_when_madre_answers_garbage(flows, sim):
    sim.set_mode("madre", "garbage")

    run = flows["A"].run(trigger="api")

    assert run.failed_step == 4
    assert steps_of(run)[3:] == [(4, "failed"), (5, "skipped")]
    assert reason_of(run, 4).startswith("response is not JSON (text/plain")
    assert "simulated garbage" in run.steps.get(position=4).response_excerpt


def test_flow_a_fails_when_madre_is_down_behind_the_gateway(flows, sim):
    sim.set_mode("madre", "down")

    run = flows["A"].run(trigger="api")

    assert run.failed_step == 4
    assert "upstream madre unreachable" in reason_of(run, 4)
