import time
from functools import cache
from pathlib import Path

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.staticfiles import finders
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_safe


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return "ok"
    except Exception as exc:  # the point is to report, not to crash
        return f"error: {exc}"


async def _roundtrip(layer) -> None:
    channel = await layer.new_channel("health.")
    await layer.send(channel, {"type": "health.ping", "at": time.time()})
    await layer.receive(channel)


def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "error: no channel layer configured"
    try:
        async_to_sync(_roundtrip)(layer)
        return "ok"
    except Exception as exc:
        return f"error: {exc}"


def portal_health(request):
    """The portal's own health: the database and the channel layer answer."""
    checks = {"database": _check_database(), "channel_layer": _check_channel_layer()}
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "error", "module": "portal", **checks}, status=200 if ok else 503)


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
