"""Celery entry points for flows; thin on purpose."""

from celery import shared_task

from .models import Flow, FlowRun


@shared_task(name="apps.flows.tasks.run_flow", soft_time_limit=1800)
def run_flow(name: str) -> dict:
    """One beat entry per flow (created by the data migration; schedules editable in the admin)."""
    flow = Flow.objects.filter(name=name).first()
    if flow is None:
        return {"flow": name, "status": "missing"}
    if not flow.enabled:
        return {"flow": name, "status": "disabled"}
    return flow.run(trigger="beat").summary()


@shared_task(name="apps.flows.tasks.prune_flow_runs", soft_time_limit=600)
def prune_flow_runs() -> dict:
    return {"deleted": FlowRun.prune()}
