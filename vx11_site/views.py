import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import JsonResponse


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
