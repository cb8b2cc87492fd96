from celery import shared_task

from .models import Event, relay_unsent


@shared_task(name="apps.events.tasks.prune_events")
def prune_events() -> int:
    """Stored events are kept VX11_EVENT_RETENTION_HOURS for replay, then deleted in chunks."""
    return Event.prune()


@shared_task(name="apps.events.tasks.relay_events", soft_time_limit=120, ignore_result=True)
def relay_events() -> dict:
    """On beat (every 5 s): send the stored events the channel layer did not take when they were published."""
    return relay_unsent()
