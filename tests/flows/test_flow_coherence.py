"""contract_coherence_pct, the beat tasks (run one flow, run a queued run, sweep interrupted runs,
prune), retention, and the daughters' "flow" kind registered by apps.flows."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.events.models import Event
from apps.flows import tasks
from apps.flows.models import ContractCoherence, Flow, FlowRun, StepResult
from tests.flows.helpers import steps_of


def test_coherence_is_nv_until_a_flow_runs(flows):
    assert Flow.contract_coherence_pct() == "NV"


def test_coherence_counts_the_latest_run_of_each_enabled_flow(flows, sim):
    sim.set_mode("hermes", "down")
    flows["A"].run()
    flows["C"].run()
    assert Flow.contract_coherence_pct() == 50.0
    sim.set_mode("hermes", "ok")
    flows["A"].run()  # the latest run counts, not the history
    assert Flow.contract_coherence_pct() == 100.0
    row = ContractCoherence.objects.first()
    assert (row.passed, row.total, row.detail) == (2, 2, {"A": "passed", "C": "passed"})

    sim.set_mode("manifestator", "down")
    flows["C"].run()
    assert Flow.contract_coherence_pct() == 50.0
    Flow.objects.filter(name="C").update(enabled=False)  # a disabled flow no longer counts
    ContractCoherence.recompute()
    assert Flow.contract_coherence_pct() == 100.0


def test_beat_entries_from_the_migration(db):
    entries = {p.name: p for p in PeriodicTask.objects.filter(task__startswith="apps.flows.")}
    assert set(entries) == {
        "flows: run flow A",
        "flows: run flow B",
        "flows: run flow C",
        "flows: prune old runs",
        "flows: sweep interrupted runs",
    }
    assert entries["flows: run flow B"].kwargs == '{"name": "B"}'
    assert entries["flows: run flow B"].enabled
    assert entries["flows: sweep interrupted runs"].task == "apps.flows.tasks.sweep_stale_runs"
    assert entries["flows: sweep interrupted runs"].interval.every == 30


def test_beat_task_runs_a_flow(flows):
    assert tasks.run_flow("C")["status"] == "passed"
    assert FlowRun.objects.get().trigger == "beat"
    assert tasks.run_flow("nope") == {"flow": "nope", "status": "missing"}
    Flow.objects.filter(name="A").update(enabled=False)
    assert tasks.run_flow("A") == {"flow": "A", "status": "disabled"}


def test_a_queued_run_is_run_once(flows):
    run = flows["C"].queue(
        trigger="api"
    )  # in this test the on-commit send never happens; the task is called as a worker would
    assert tasks.run_queued_flow(run.id)["status"] == "passed"
    assert tasks.run_queued_flow(run.id) == {"run_id": run.id, "status": "not queued"}  # a redelivered message
    assert StepResult.objects.filter(run=run).count() == 5


def started(flow, status: str, seconds_ago: float, heartbeat_ago: float | None = None) -> FlowRun:
    now = timezone.now()
    heartbeat = None if heartbeat_ago is None else now - timedelta(seconds=heartbeat_ago)
    return FlowRun.objects.create(
        flow=flow, status=status, trigger="api", started_at=now - timedelta(seconds=seconds_ago), heartbeat_at=heartbeat
    )


def test_sweep_fails_runs_left_unfinished_past_their_bound(flows, settings, django_capture_on_commit_callbacks):
    settings.VX11_FLOW_RUN_STALE_SECONDS = 60
    died = started(flows["C"], "running", 120)
    StepResult.objects.create(run=died, position=1, name="scan", kind="http", status="passed")
    never_started = started(flows["A"], "queued", 120)
    young = started(flows["C"], "running", 10, heartbeat_ago=5)
    finished = started(flows["C"], "passed", 3600)
    slow = Flow.save_spec(
        {"name": "S", "steps": [{"db": {"model": "fleet.Module", "filter": {"slug": "madre"}, "within": 900}}]}
    )
    long_wait = started(
        slow, "running", 120, heartbeat_ago=5
    )  # may still be waiting: its bound is twice its 900 s step

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_stale_runs() == {"swept": 2}

    died.refresh_from_db(), never_started.refresh_from_db()
    assert died.status == "failed"
    assert died.finished_at is not None
    assert died.reason == "interrupted: no end recorded 60 s after it started (its process died?)"
    assert steps_of(died) == [(1, "passed"), (2, "skipped"), (3, "skipped"), (4, "skipped"), (5, "skipped")]
    assert died.steps.get(position=2).reason == "skipped: the run was interrupted"
    assert never_started.reason == "interrupted: queued over 60 s ago and never started (is a Celery worker running?)"
    assert steps_of(never_started) == [(n, "skipped") for n in range(1, 6)]
    assert [FlowRun.objects.get(id=r.id).status for r in (young, finished, long_wait)] == [
        "running",
        "passed",
        "running",
    ]
    assert FlowRun.stale_after(slow) == pytest.approx(2 * 900.05)
    assert ContractCoherence.objects.first().detail == {"A": "failed", "C": "failed"}
    assert set(
        Event.objects.filter(type="status_changed", data__source="flows").values_list("data__run_id", "data__status")
    ) == {(died.id, "failed"), (never_started.id, "failed")}
    assert tasks.sweep_stale_runs() == {"swept": 0}


def test_a_swept_run_keeps_its_verdict_if_its_process_wakes_up(flows):
    """A run swept while its process was frozen: the runner stops at the next step and stores nothing over it."""

    def frozen_for_an_hour(result):
        if result.position == 2:
            FlowRun.sweep_stale(now=timezone.now() + timedelta(hours=1))

    run = flows["C"].run(on_step=frozen_for_an_hour)

    assert run.status == "failed"
    assert run.reason.startswith("interrupted: no end recorded 1800 s after it started")
    assert steps_of(run) == [(1, "passed"), (2, "passed"), (3, "skipped"), (4, "skipped"), (5, "skipped")]


def test_prune_deletes_old_runs_and_their_steps_in_chunks(flows, settings):
    settings.VX11_FLOW_RUN_RETENTION_DAYS = 7
    settings.VX11_PRUNE_CHUNK = 2
    old, new = flows["C"].run(), flows["C"].run()
    FlowRun.objects.filter(id=old.id).update(started_at=timezone.now() - timedelta(days=8))
    ContractCoherence.objects.update(computed_at=timezone.now() - timedelta(days=8))

    assert tasks.prune_flow_runs() == {"deleted": 5 + 1 + 2}  # 5 step results, 1 run, 2 coherence rows
    assert list(FlowRun.objects.values_list("id", flat=True)) == [new.id]
    assert StepResult.objects.filter(run=new).count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_flow_daughter_runs_a_flow(flows, eager_celery):
    from django.core.exceptions import ValidationError

    from apps.daughters.models import DaughterTask

    task = DaughterTask.spawn("flow", {"flow": "C"}, source="operator", description="flow C as a daughter")
    daughter = task.daughters.get()
    daughter.refresh_from_db()
    assert daughter.status == "finished"
    assert daughter.result["status"] == "passed"
    assert FlowRun.objects.get().trigger == "daughter"

    with pytest.raises(ValidationError, match="naming an existing flow"):
        DaughterTask.spawn("flow", {"flow": "Z"})
