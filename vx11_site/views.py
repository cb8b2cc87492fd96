import logging
import time
from functools import cache
from pathlib import Path

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.staticfiles import finders
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from apps.fleet import watchdog

log = logging.getLogger(__name__)

# /health answers anyone: it says what failed, never how (the exception goes to the log)
FAILED = {
    "database": "the database did not answer",
    "channel_layer": "the channel layer did not answer",
    "scheduler": "the scheduler's records could not be read",
}


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return "ok"
    except Exception:  # the point is to report, not to crash
        log.exception("health: database check failed")
        return "error"


async def _roundtrip(layer) -> None:
    channel = await layer.new_channel("health.")
    await layer.send(channel, {"type": "health.ping", "at": time.time()})
    await layer.receive(channel)


def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        log.error("health: no channel layer configured")
        return "error"
    try:
        async_to_sync(_roundtrip)(layer)
        return "ok"
    except Exception:
        log.exception("health: channel layer check failed")
        return "error"


def portal_health(request):
    """The portal's own health: the database and the channel layer answer, beat ticks and probe rounds
    are recent (apps.fleet.watchdog). 503 with a `detail` naming what failed or stalled."""
    checks = {"database": _check_database(), "channel_layer": _check_channel_layer()}
    problems = [FAILED[name] for name, value in checks.items() if value != "ok"]
    signals = []
    if checks["database"] == "ok":
        try:
            signals = watchdog.status()
        except Exception:
            log.exception("health: scheduler check failed")
            problems.append(FAILED["scheduler"])
    for name in ("beat", "probe_rounds"):
        checks[name] = next((s.as_dict() for s in signals if s.name == name), {"status": "unknown"})
    if stalled := watchdog.problem(signals):
        problems.append(stalled)
    body = {"status": "error" if problems else "ok", "module": "portal", **checks}
    if problems:
        body["detail"] = "; ".join(problems)
    return JsonResponse(body, status=503 if problems else 200)


@cache
def _favicon_bytes() -> bytes:
    # the same file the admin pages link as a static file: one icon, kept once under static/
    return Path(finders.find("vx11/favicon.ico")).read_bytes()


@require_safe
def favicon(request):
    """/favicon.ico: browsers ask for it on any page that declares no icon (JSON answers, /health)."""
    response = HttpResponse(_favicon_bytes(), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
