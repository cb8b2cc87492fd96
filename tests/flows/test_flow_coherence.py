"""contract_coherence_pct, the beat tasks (run one flow, prune), retention, and the daughters'
"flow" kind registered by apps.flows."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.flows import tasks
from apps.flows.models import ContractCoherence, Flow, FlowRun, StepResult


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
    assert set(entries) == {"flows: run flow A", "flows: run flow B", "flows: run flow C", "flows: prune old runs"}
    assert entries["flows: run flow B"].kwargs == '{"name": "B"}' and entries["flows: run flow B"].enabled


def test_beat_task_runs_a_flow(flows):
    assert tasks.run_flow("C")["status"] == "passed"
    assert FlowRun.objects.get().trigger == "beat"
    assert tasks.run_flow("nope") == {"flow": "nope", "status": "missing"}
    Flow.objects.filter(name="A").update(enabled=False)
    assert tasks.run_flow("A") == {"flow": "A", "status": "disabled"}


def test_prune_deletes_old_runs_and_their_steps_in_chunks(flows, settings):
    settings.VX11_FLOW_RUN_RETENTION_DAYS = 7
    settings.VX11_PRUNE_CHUNK = 2
    old, new = flows["C"].run(), flows["C"].run()
    FlowRun.objects.filter(id=old.id).update(started_at=timezone.now() - timedelta(days=8))
    ContractCoherence.objects.update(computed_at=timezone.now() - timedelta(days=8))

    assert tasks.prune_flow_runs() == {"deleted": 4 + 1 + 2}  # 4 step results, 1 run, 2 coherence rows
    assert list(FlowRun.objects.values_list("id", flat=True)) == [new.id]
    assert StepResult.objects.filter(run=new).count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_flow_daughter_runs_a_flow(flows, eager_daughters):
    from apps.daughters.models import DaughterTask
    from django.core.exceptions import ValidationError

    task = DaughterTask.spawn("flow", {"flow": "C"}, source="operator", description="flow C as a daughter")
    daughter = task.daughters.get()
    daughter.refresh_from_db()
    assert daughter.status == "finished" and daughter.result["status"] == "passed"
    assert FlowRun.objects.get().trigger == "daughter"

    with pytest.raises(ValidationError, match="naming an existing flow"):
        DaughterTask.spawn("flow", {"flow": "Z"})
