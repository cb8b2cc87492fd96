from celery import shared_task

from .models import Event


@shared_task(name="apps.events.tasks.prune_events")
def prune_events() -> int:
    """Stored events are kept VX11_EVENT_RETENTION_HOURS for replay, then deleted in chunks."""
    return Event.prune()
