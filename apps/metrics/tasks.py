"""Celery entry points for the scorecard; thin on purpose."""

from celery import shared_task

from .models import Scorecard


@shared_task(name="apps.metrics.tasks.take_snapshot", soft_time_limit=600)
def take_snapshot(actor: str = "beat", prune: bool = True) -> dict:
    """A snapshot (beat's hourly entry, the API's compute); beat's also prunes old scorecards."""
    from .snapshot import take_snapshot as snapshot

    card = snapshot(actor=actor)
    return {"scorecard": card.id, "verdict": card.verdict, "pruned": Scorecard.prune() if prune else 0}
