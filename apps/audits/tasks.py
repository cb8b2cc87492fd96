"""Celery entry points for audits; thin on purpose."""

from celery import shared_task

from .models import AuditRun


@shared_task(name="apps.audits.tasks.run_audit", soft_time_limit=4 * 3600)
def run_audit(run_id: int) -> dict:
    """A run queued by AuditRun.queue() (the API, the admin's Run now)."""
    from .runner import run_queued

    run = run_queued(run_id)
    return {"run_id": run_id, "status": "not queued"} if run is None else run.summary()


@shared_task(name="apps.audits.tasks.nightly_audit", soft_time_limit=4 * 3600)
def nightly_audit(kind: str = "all", approx: bool = False) -> dict:
    """The nightly beat entry: one audit of everything, then old runs pruned and stale ones ended."""
    from .runner import run_now

    swept = AuditRun.sweep_stale()
    run = run_now(kind, approx=approx, trigger="beat")
    return {**run.summary(), "pruned": AuditRun.prune(), "swept": swept}
