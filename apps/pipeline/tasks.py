"""Celery entry points of the pipeline; thin on purpose (the work is in apps.pipeline.runner)."""

from celery import shared_task

from .models import Busy, PipelineRun


@shared_task(name="apps.pipeline.tasks.run_pipeline_phase", acks_late=True, soft_time_limit=6 * 3600)
def run_pipeline_phase(run_id: int, number: int) -> dict:
    """One phase of a queued run (a link of the chain runner.queue sends)."""
    from .runner import run_phase

    phase = run_phase(run_id, number)
    return {"run": run_id, "phase": number, "status": phase.status if phase else "nothing to do"}


@shared_task(name="apps.pipeline.tasks.finish_pipeline_run", acks_late=True)
def finish_pipeline_run(run_id: int) -> dict:
    from .runner import finish_run

    run = finish_run(run_id)
    return {"run": run_id, "status": run.status if run else "gone"}


@shared_task(name="apps.pipeline.tasks.nightly_pipeline")
def nightly_pipeline(phases: str = "") -> dict:
    """The beat entry: start a run of every phase (or `phases`, "1,3,6") unless one is going."""
    from .runner import queue, start

    try:
        run = queue(start("beat", phases=phases or None))
    except Busy as busy:
        return {"started": None, "why": str(busy)}
    return {"started": run.id, "url": run.api_url}


@shared_task(name="apps.pipeline.tasks.sweep_pipeline_runs")
def sweep_pipeline_runs() -> dict:
    """Runs whose worker went silent end as interrupted; old runs are pruned."""
    from .runner import sweep

    return {"interrupted": sweep(), "pruned": PipelineRun.prune()}
