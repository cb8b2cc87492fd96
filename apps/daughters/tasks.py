"""Celery entry points for daughters; thin on purpose (the work is in models.Daughter)."""

from celery import shared_task

from .models import Daughter, DaughterTask


@shared_task(
    name="apps.daughters.tasks.run_daughter", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def run_daughter(self, daughter_id: int, level: int) -> str:
    """Acknowledged late: a worker that dies mid-run leaves the message to be delivered again; the
    claim on (status, mutation_level) makes a second delivery of the same attempt a no-op."""
    return Daughter.run(daughter_id, level, worker=self.request.hostname or "")


@shared_task(name="apps.daughters.tasks.reap_daughters", soft_time_limit=300)
def reap_daughters() -> dict:
    """On beat: expire past-TTL daughters, retry or fail stale ones, requeue lost dispatches, prune old tasks,
    forget idempotency keys past their window."""
    result = Daughter.reap()
    result["pruned_tasks"] = DaughterTask.prune()
    result["forgotten_keys"] = DaughterTask.forget_idempotency_keys()
    return result
