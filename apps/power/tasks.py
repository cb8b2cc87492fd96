"""Celery entry points for power; thin on purpose."""

from datetime import datetime

from celery import shared_task
from django.conf import settings

from . import backends
from .manager import expire_windows
from .models import MAX_STOP_GRACE, PowerAction, WindowStop


def one_stop_worst_case() -> float:
    """Seconds one stop may take at most: compose/systemd's command timeout, or the process backend's
    longest grace (MAX_STOP_GRACE) + 5 s after SIGKILL + the /health wait; plus a margin for the database."""
    process = MAX_STOP_GRACE + 5 + settings.VX11_POWER_HEALTH_TIMEOUT + 1
    return max(settings.VX11_POWER_COMMAND_TIMEOUT, process) + 30


@shared_task(
    name="apps.power.tasks.check_power_windows",
    soft_time_limit=one_stop_worst_case(),
    time_limit=one_stop_worst_case() + 30,
)
def check_power_windows(now: datetime | None = None) -> dict:
    """Every few seconds: stop one module a ttl power window started, once the window expired (or was closed
    with that stop still pending); a refused or failed stop is tried again on a later tick. One per call, so
    the time limit above holds whatever the number of modules.
    `now`: the moment to judge expiry at (default: the current time), so a caller can test expiry without waiting."""
    actions = expire_windows(now=now, max_stops=1)
    return {
        "stopped": [a.service for a in actions if a.result == "ok"],
        "failed": [a.service for a in actions if a.result != "ok"],
    }


@shared_task(name="apps.power.tasks.prune_power_actions", soft_time_limit=600)
def prune_power_actions() -> dict:
    """Hourly: drop action rows older than VX11_POWER_ACTION_RETENTION_DAYS with their evidence folders
    (and the expiry stops of windows that ended before then), and cut the process backend's module logs
    (var/power/<slug>.log) down to VX11_POWER_LOG_MAX_BYTES."""
    return {"pruned": PowerAction.prune(), "window_stops": WindowStop.prune(), "logs_cut": backends.trim_logs()}
