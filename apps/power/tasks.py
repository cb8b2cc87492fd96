"""Celery entry points for power; thin on purpose."""

from celery import shared_task

from .models import PowerAction, expire_windows


@shared_task(name="apps.power.tasks.check_power_windows", soft_time_limit=120)
def check_power_windows() -> dict:
    """Every few seconds: stop the modules of expired ttl power windows (each window once)."""
    actions = expire_windows()
    return {"stopped": [a.service for a in actions if a.result == "ok"], "failed": [a.service for a in actions if a.result != "ok"]}


@shared_task(name="apps.power.tasks.prune_power_actions", soft_time_limit=600)
def prune_power_actions() -> dict:
    """Hourly: drop action rows older than VX11_POWER_ACTION_RETENTION_DAYS (evidence folders stay)."""
    return {"pruned": PowerAction.prune()}
