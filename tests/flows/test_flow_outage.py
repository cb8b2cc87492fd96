"""A Redis outage (the channel layer and the Celery broker refuse connections: channels-redis and kombu
pointed at a port where nothing listens) costs a flow run nothing: a waiting run answers 200 and ends, a
queued run runs to its end. A run whose process is gone is failed by the sweep once it has been silent
for VX11_FLOW_RUN_SILENT_SECONDS; a runner that fails ends its run instead of leaving it `running`."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.events.models import Event
from apps.flows import tasks
from apps.flows.models import Flow, FlowRun
from tests.flows.helpers import steps_of
from tests.helpers import celery_sends_to, free_port


@pytest.fixture
def redis_down(dead_channel_layer):
    with celery_sends_to(f"redis://127.0.0.1:{free_port()}/0", "nowhere"):
        yield


@pytest.mark.django_db(transaction=True)
def test_a_waiting_run_during_a_redis_outage_answers_200_and_ends(api, flows, redis_down):
    response = api.post("/api/flows/A/run")
    assert response.status_code == 200, response.content
    run = FlowRun.objects.get()
    assert (response.json()["status"], run.status) == ("passed", "passed")
    events = Event.objects.filter(data__source="flows", data__run_id=run.id)
    # kept for the relay and replay
    assert events.count() == 7
    assert not events.filter(sent_at__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_a_queued_run_whose_worker_lost_redis_runs_to_its_end(api, flows, redis_down):
    run = flows["A"].queue(trigger="api")
    run = FlowRun.objects.get(id=run.id)
    assert run.status == "failed"
    assert run.reason.startswith("could not be queued")  # the broker refused the message
    queued = FlowRun.objects.create(flow=flows["A"], status="queued", trigger="api")  # one the broker had taken before
    assert tasks.run_queued_flow(queued.id)["status"] == "passed"  # as a worker runs it, with Redis gone meanwhile
    assert steps_of(queued) == [(n, "passed") for n in range(1, 6)]


@pytest.mark.django_db
def test_a_run_silent_past_the_bound_is_swept_whatever_its_age(flows, settings, django_capture_on_commit_callbacks):
    settings.VX11_FLOW_RUN_SILENT_SECONDS = 60
    now = timezone.now()
    started = now - timedelta(seconds=100)
    gone = FlowRun.objects.create(
        flow=flows["C"], status="running", trigger="api", started_at=started, heartbeat_at=now - timedelta(seconds=61)
    )
    alive = FlowRun.objects.create(
        flow=flows["C"], status="running", trigger="api", started_at=started, heartbeat_at=now - timedelta(seconds=30)
    )
    assert FlowRun.stale_after(flows["C"]) == 1800  # the age bound alone would wait half an hour
    with django_capture_on_commit_callbacks(execute=True):
        assert FlowRun.sweep_stale(now=now) == 1
    gone.refresh_from_db()
    assert (gone.status, gone.reason) == ("failed", "interrupted: no heartbeat for 60 s (its process died?)")
    assert steps_of(gone) == [(n, "skipped") for n in range(1, 6)]
    assert Event.objects.filter(type="status_changed", data__run_id=gone.id, data__status="failed").exists()
    assert FlowRun.objects.get(id=alive.id).status == "running"
    assert FlowRun.sweep_stale(now=now + timedelta(seconds=31)) == 1  # its turn once it is silent as long


@pytest.mark.django_db(transaction=True)
def test_a_run_heartbeats_while_a_step_waits(flows, settings):
    settings.VX11_FLOW_RUN_HEARTBEAT_SECONDS = 0.05
    wait = {"model": "fleet.Module", "filter": {"slug": "nope"}, "within": 0.5}
    flow = Flow.save_spec({"name": "W", "steps": [{"name": "wait", "db": wait}]})
    seen = []
    run = flow.run(on_step=lambda result: seen.append(FlowRun.objects.get(id=result.run_id)))
    assert run.status == "failed"
    during = seen[0]
    assert during.heartbeat_at > during.started_at + timedelta(seconds=0.2)  # beats came while the step waited
    assert not run.beat()  # ended: nothing left to keep alive


@pytest.mark.django_db
def test_a_runner_that_fails_ends_its_run_instead_of_leaving_it_running(flows):
    def broken(result):
        if result.position == 2:
            raise RuntimeError("the runner broke")

    with pytest.raises(RuntimeError):
        flows["C"].run(on_step=broken)
    run = FlowRun.objects.get()
    assert (run.status, run.reason) == ("failed", "error: the runner stopped on RuntimeError: the runner broke")
    assert run.finished_at is not None
    assert steps_of(run) == [(1, "passed"), (2, "passed"), (3, "skipped"), (4, "skipped"), (5, "skipped")]
