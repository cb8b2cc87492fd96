"""Celery entry points for flows; thin on purpose."""

from celery import shared_task

from .models import Flow, FlowRun


@shared_task(name="apps.flows.tasks.run_flow", soft_time_limit=1800)
def run_flow(name: str) -> dict:
    """One beat entry per canonical flow (vx11_site.schedules; schedules editable in the admin)."""
    flow = Flow.objects.filter(name=name).first()
    if flow is None:
        return {"flow": name, "status": "missing"}
    if not flow.enabled:
        return {"flow": name, "status": "disabled"}
    return flow.run(trigger="beat").summary()


@shared_task(name="apps.flows.tasks.run_queued_flow", soft_time_limit=1800)
def run_queued_flow(run_id: int) -> dict:
    """A run queued by Flow.queue() (API ?wait=false, the admin's Run now)."""
    from .runner import run_queued

    run = run_queued(run_id)
    return {"run_id": run_id, "status": "not queued"} if run is None else run.summary()


@shared_task(name="apps.flows.tasks.sweep_stale_runs", soft_time_limit=300)
def sweep_stale_runs() -> dict:
    """Fails runs left queued or running past their bound (FlowRun.sweep_stale)."""
    return {"swept": FlowRun.sweep_stale()}


@shared_task(name="apps.flows.tasks.prune_flow_runs", soft_time_limit=600)
def prune_flow_runs() -> dict:
    return {"deleted": FlowRun.prune()}
