"""Celery entry points for the fleet; thin on purpose."""

from celery import shared_task

from . import notify
from .models import maintain_history
from .probe import run_round


@shared_task(name="apps.fleet.tasks.probe_fleet", ignore_result=False, soft_time_limit=120)
def probe_fleet() -> dict:
    """The one beat entry that sweeps the whole fleet."""
    results, changes = run_round()
    return {"probed": len(results), "failed": sum(r.outcome == "fail" for r in results), "state_changes": len(changes)}


@shared_task(name="apps.fleet.tasks.maintain_fleet_history", soft_time_limit=600)
def maintain_fleet_history() -> dict:
    """Rollups, uptime refresh and chunked pruning, once a minute."""
    return maintain_history()


@shared_task(name="apps.fleet.tasks.send_notifications", soft_time_limit=120)
def send_notifications() -> dict:
    """Every 10 s: claim new state changes, create their deliveries, send the due ones (see fleet.notify)."""
    return notify.sweep()
