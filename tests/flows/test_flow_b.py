"""Flow B (madre -> daughter -> DB) against the demo fleet and the portal's daughters app: the
daughter really runs (Celery eager, transactional test database), its rows must reach `finished`."""

import threading

import pytest
from django.db import connections

from apps.daughters.models import Daughter, DaughterTask
from apps.flows.models import Flow
from tests.flows.helpers import reason_of, steps_of

pytestmark = pytest.mark.django_db(transaction=True)


def test_flow_b_spawns_a_daughter_that_finishes(flows, eager_celery):
    run = flows["B"].run(trigger="api")

    assert run.status == "passed", run.reason
    assert steps_of(run) == [(n, "passed") for n in range(1, 5)]
    task_id = run.steps.get(position=3).captured["task_id"]
    task = DaughterTask.objects.get(id=task_id)
    daughter = task.daughters.get()
    plan_id = run.steps.get(position=2).captured["plan_id"]
    assert (task.source, task.status, daughter.kind, daughter.status) == ("madre", "completed", "http", "finished")
    assert task.intent_id == run.steps.get(position=2).captured["intent_id"]  # the daughter carries madre's intent
    assert daughter.params["path"] == f"/madre/plans/{plan_id}"
    assert daughter.result["status_code"] == 200
    assert run.steps.get(position=4).captured == {"count": 1, "ids": [daughter.id]}


def test_flow_b_fails_at_madre_when_madre_answers_garbage(flows, eager_celery, sim):
    sim.set_mode("madre", "garbage")

    run = flows["B"].run(trigger="api")

    assert run.failed_step == 1
    assert reason_of(run, 1).startswith("response is not JSON")
    assert steps_of(run)[1:] == [(2, "skipped"), (3, "skipped"), (4, "skipped")]
    assert not DaughterTask.objects.exists()  # nothing was spawned


def test_flow_b_fails_when_the_daughter_fails(flows, eager_celery, sim):
    """madre answers 500 to the daughter's call: the daughter fails (no retries), step 4 says so."""

    def madre_breaks_after_the_intent(result):
        if result.position == 2:
            sim.set_mode("madre", "error")

    run = flows["B"].run(trigger="api", on_step=madre_breaks_after_the_intent)

    assert run.failed_step == 4
    assert "matches fail_on" in reason_of(run, 4)
    assert "status='failed'" in reason_of(run, 4)


def test_flow_b_fails_when_the_daughter_expires(flows, eager_celery, sim):
    """A 1 s TTL and a madre that takes 2 s to answer the daughter: the reaper (run here as beat
    would) expires it, and step 4 fails on the expired row."""
    spec = flows["B"].to_spec()
    spec["steps"][2]["spawn"]["ttl_seconds"] = 1
    flow = Flow.save_spec(spec, replace=True)

    stop = threading.Event()

    def reaper():
        try:
            while not stop.wait(0.1):
                Daughter.reap()
        finally:
            connections.close_all()  # this thread's own connection (PostgreSQL would keep the test DB busy)

    def madre_slows_after_the_intent(result):
        if result.position == 2:
            sim.set_mode("madre", "slow", delay=2.0)
            threading.Thread(target=reaper, daemon=True).start()

    try:
        run = flow.run(trigger="api", on_step=madre_slows_after_the_intent)
    finally:
        stop.set()

    assert run.failed_step == 4
    assert steps_of(run)[:3] == [(1, "passed"), (2, "passed"), (3, "passed")]
    assert "status='expired'" in reason_of(run, 4), reason_of(run, 4)
    assert "TTL passed" in reason_of(run, 4), reason_of(run, 4)


def test_flow_b_times_out_when_no_worker_runs_the_daughter(flows, settings):
    """Without a worker (not eager, none started) the daughter stays spawned: step 4 waits its
    `within` and says how many rows are still not finished."""
    spec = flows["B"].to_spec()
    spec["steps"][3]["db"]["within"] = 0.3
    flow = Flow.save_spec(spec, replace=True)

    run = flow.run(trigger="api")

    assert run.failed_step == 4
    assert reason_of(run, 4) == '1 of 1 daughters.Daughter row(s) still not {"status": "finished"} after 0.3 s'


@pytest.mark.services
def test_flow_b_on_a_real_worker(flows, daughter_worker):
    """The daughter runs in a real Celery worker process on Redis, as in production."""
    run = flows["B"].run(trigger="api")

    assert run.status == "passed", f"{run.reason}\n{daughter_worker.output()}"
    daughter = Daughter.objects.get(task_id=run.steps.get(position=3).captured["task_id"])
    assert daughter.status == "finished"
    assert daughter.attempts.get().worker.startswith("daughters-test-")
