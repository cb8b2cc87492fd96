"""The event bus: the six canonical VX11 event types, the envelope, stored events for replay.

Every app announces through `publish()`; nobody talks to the channel layer directly.
This app imports no domain app.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import models
from django.utils import timezone

from vx11_site.db import prune_in_chunks

CANONICAL_TYPES = (
    "message_received",
    "tool_call_requested",
    "tool_result_received",
    "plan_updated",
    "status_changed",
    "error_reported",
)
BROADCAST_GROUP = "vx11.broadcast"
SESSION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def session_group(session_id: str) -> str:
    return f"vx11.session.{session_id}"


class Event(models.Model):
    """A published event; `id` is the replay cursor."""

    session_id = models.CharField(max_length=64, blank=True, help_text="empty: a broadcast to every session")
    type = models.CharField(max_length=32, choices=[(t, t) for t in CANONICAL_TYPES])
    timestamp = models.DateTimeField(default=timezone.now)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["id"]
        indexes = [
            # replay after a cursor for one session (plus broadcasts): Event.replay()
            models.Index(fields=["session_id", "id"], name="event_session_cursor"),
            # prune by age: Event.prune()
            models.Index(fields=["timestamp"], name="event_time"),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.type} ({self.session_id or 'broadcast'})"

    @property
    def envelope(self) -> dict:
        return {
            "type": self.type,
            "session_id": self.session_id or None,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "data": self.data,
            "cursor": self.id,
        }

    @classmethod
    def latest_id(cls) -> int:
        return cls.objects.aggregate(m=models.Max("id"))["m"] or 0

    @classmethod
    def after(cls, cursor: int, limit: int = 1000) -> list[Event]:
        """Every session's events after a cursor (the in-memory layer's relay)."""
        return list(cls.objects.filter(id__gt=cursor).order_by("id")[:limit])

    @classmethod
    def replay(cls, session_id: str, after: int, limit: int = 1000) -> list[Event]:
        return list(cls.objects.filter(id__gt=after, session_id__in=[session_id, ""]).order_by("id")[:limit])

    @classmethod
    def prune(cls, now=None) -> int:
        cutoff = (now or timezone.now()) - timedelta(hours=settings.VX11_EVENT_RETENTION_HOURS)
        return prune_in_chunks(cls.objects.filter(timestamp__lt=cutoff))


def _store(event_type: str, data: dict | None, session_id: str | None) -> dict:
    if event_type not in CANONICAL_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; canonical types: {', '.join(CANONICAL_TYPES)}")
    if session_id is not None and not SESSION_ID.match(session_id):
        raise ValueError(f"invalid session id {session_id!r}: 1-64 of A-Z a-z 0-9 _ . -")
    return Event.objects.create(type=event_type, session_id=session_id or "", data=data or {}).envelope


def _groups(session_id: str | None) -> list[str]:
    """A session's event goes to that session's group; an event of no session to everyone."""
    return [session_group(session_id)] if session_id else [BROADCAST_GROUP]


_bus_loop: tuple[int, asyncio.AbstractEventLoop] | None = None
_bus_loop_lock = threading.Lock()


def _sender_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process for sync publishers, so the Redis layer keeps its connections.

    async_to_sync runs each send on a new loop, and channels_redis pools connections per loop:
    measured 4.4 ms per publish, most of it a new Redis connection. Made again after a fork."""
    global _bus_loop
    with _bus_loop_lock:
        if _bus_loop is None or _bus_loop[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="vx11-event-bus", daemon=True).start()
            _bus_loop = (os.getpid(), loop)
        return _bus_loop[1]


async def send(layer, envelope: dict, session_id: str | None = None) -> None:
    """Hand a stored event's envelope to the channel layer: its session's group, or everyone's.
    The one place that knows the group names and the message shape (publish, apublish, the operator's relay)."""
    for group in _groups(session_id):
        await layer.group_send(group, {"type": "vx11.event", "event": envelope})


def publish(event_type: str, data: dict | None = None, session_id: str | None = None) -> dict:
    """Validate, store and send an event: to its session's group, or without a session to the broadcast group."""
    envelope = _store(event_type, data, session_id)
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):  # its queues belong to the server's own loop
        async_to_sync(send)(layer, envelope, session_id)
    elif layer is not None:
        asyncio.run_coroutine_threadsafe(send(layer, envelope, session_id), _sender_loop()).result(timeout=10)
    return envelope


async def apublish(event_type: str, data: dict | None = None, session_id: str | None = None) -> dict:
    """publish() for async callers (the WebSocket consumer)."""
    envelope = await database_sync_to_async(_store)(event_type, data, session_id)
    layer = get_channel_layer()
    if layer is not None:
        await send(layer, envelope, session_id)
    return envelope
