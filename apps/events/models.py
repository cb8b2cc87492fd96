"""The event bus: the six canonical VX11 event types, the envelope, stored events for replay.

Every app announces through `publish()`; nobody talks to the channel layer directly.
This app imports no domain app.

An outbox: `publish()` stores the event in the caller's transaction (so it exists exactly when the
change it announces does) and hands it to the channel layer after the commit. A layer that is down
never fails the publisher: the event stays unsent (`sent_at` empty) and `relay_unsent()` (the beat
entry "events: relay unsent events") sends it once the layer answers again; a client that reconnects
gets it anyway by replay from its cursor. Consumers drop a cursor they already had, so an event
sent twice (the relay racing a slow publisher) reaches each client once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import weakref
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import DatabaseError, models, transaction
from django.utils import timezone

from vx11_site.db import prune_in_chunks

log = logging.getLogger(__name__)

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
SEND_TIMEOUT = 2.0  # seconds a publisher waits for the channel layer; a healthy send takes about a millisecond
LAYER_BACKOFF = 5.0  # after a failed send, publishers leave events to the relay this long (no waiting on a dead layer)
RELAY_GRACE = timedelta(seconds=5)  # younger unsent events are left to their publisher, whose send may be under way
RELAY_BATCH = 500


def session_group(session_id: str) -> str:
    return f"vx11.session.{session_id}"


class Event(models.Model):
    """A published event; `id` is the replay cursor."""

    session_id = models.CharField(max_length=64, blank=True, help_text="empty: a broadcast to every session")
    type = models.CharField(max_length=32, choices=[(t, t) for t in CANONICAL_TYPES])
    timestamp = models.DateTimeField(default=timezone.now)
    data = models.JSONField(default=dict)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="handed to the channel layer; empty: not yet")

    class Meta:
        ordering = ["id"]
        indexes = [
            # replay after a cursor for one session (plus broadcasts): Event.replay()
            models.Index(fields=["session_id", "id"], name="event_session_cursor"),
            # prune by age: Event.prune()
            models.Index(fields=["timestamp"], name="event_time"),
            # the relay's backlog, oldest first: relay_unsent(); holds only the unsent rows
            models.Index(fields=["id"], condition=models.Q(sent_at__isnull=True), name="event_unsent"),
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

    @classmethod
    def unsent(cls, before, limit: int = RELAY_BATCH) -> list[Event]:
        return list(cls.objects.filter(sent_at__isnull=True, timestamp__lt=before).order_by("id")[:limit])

    @classmethod
    def mark_sent(cls, ids: list[int]) -> None:
        """Best effort: an event a failing write leaves unsent is sent again by the relay (its clients drop it)."""
        if not ids:
            return
        try:
            cls.objects.filter(id__in=ids, sent_at__isnull=True).update(sent_at=timezone.now())
        except DatabaseError as exc:
            log.warning("could not mark %d event(s) as sent (the relay sends them again): %s", len(ids), exc)


def _outboxed(layer) -> bool:
    """Whether events wait as unsent until the layer has them: a layer other processes read (Redis).
    The in-memory layer reaches only its own process, where the WebSocket server's stored-event relay
    reads every new event from the table anyway."""
    return layer is not None and not isinstance(layer, InMemoryChannelLayer)


def _store(event_type: str, data: dict | None, session_id: str | None) -> Event:
    if event_type not in CANONICAL_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; canonical types: {', '.join(CANONICAL_TYPES)}")
    if session_id is not None and not SESSION_ID.match(session_id):
        raise ValueError(f"invalid session id {session_id!r}: 1-64 of A-Z a-z 0-9 _ . -")
    now = timezone.now()
    return Event.objects.create(
        type=event_type,
        session_id=session_id or "",
        data=data or {},
        timestamp=now,
        sent_at=None if _outboxed(get_channel_layer()) else now,
    )


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
    The one place that knows the group names and the message shape (publish, apublish, the relays)."""
    for group in _groups(session_id):
        await layer.group_send(group, {"type": "vx11.event", "event": envelope})


# A layer that failed is left alone by publishers for LAYER_BACKOFF seconds (monotonic deadline per layer
# object), so an outage costs each request nothing rather than SEND_TIMEOUT; the relay always tries.
_layer_down_until: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _layer_failed(layer, count: int, exc: BaseException) -> None:
    if layer not in _layer_down_until:
        log.warning("channel layer unreachable (%s: %s); %d event(s) left to the relay", type(exc).__name__, exc, count)
    _layer_down_until[layer] = time.monotonic() + LAYER_BACKOFF


def _layer_answered(layer) -> None:
    if _layer_down_until.pop(layer, None) is not None:
        log.warning("channel layer reachable again")


async def _send_in_order(layer, events: list[Event], sent: list[int]) -> None:
    for event in events:
        await asyncio.wait_for(send(layer, event.envelope, event.session_id or None), SEND_TIMEOUT)
        sent.append(event.id)


def _hand_over(layer, events: list[Event], force: bool = False) -> list[int]:
    """Send events in order from a sync caller until one fails; the ids sent. Never raises: what is not
    sent stays unsent for the relay. Unless `force` (the relay), a layer that just failed is not tried."""
    if not force and _layer_down_until.get(layer, 0) > time.monotonic():
        return []
    sent: list[int] = []
    future = asyncio.run_coroutine_threadsafe(_send_in_order(layer, events, sent), _sender_loop())
    try:
        future.result(timeout=SEND_TIMEOUT * len(events) + 1)
    except Exception as exc:  # whatever the layer raises (refused, timed out) means: not sent
        future.cancel()
        _layer_failed(layer, len(events) - len(sent), exc)
        return list(sent)
    _layer_answered(layer)
    return sent


def _deliver(event: Event) -> None:
    """After the commit: hand the event to the channel layer; never raises (the relay sends what fails)."""
    layer = get_channel_layer()
    if layer is None:
        return
    if not _outboxed(layer):  # in-memory: its queues belong to the server's own loop
        try:
            async_to_sync(send)(layer, event.envelope, event.session_id or None)
        except Exception as exc:  # stored already: replay and the WebSocket server's own relay still have it
            log.warning("in-memory channel layer refused event %s: %s", event.id, exc)
        return
    Event.mark_sent(_hand_over(layer, [event]))


def publish(event_type: str, data: dict | None = None, session_id: str | None = None) -> dict:
    """Validate and store an event (in the caller's transaction, if any), then after the commit send it to its
    session's group, or without a session to the broadcast group. A channel layer that fails never fails the
    caller: the event waits for the relay. Returns the envelope."""
    event = _store(event_type, data, session_id)
    transaction.on_commit(lambda: _deliver(event), robust=True)
    return event.envelope


async def apublish(event_type: str, data: dict | None = None, session_id: str | None = None) -> dict:
    """publish() for async callers (the WebSocket consumer); a failing layer leaves the event to the relay."""
    event = await database_sync_to_async(_store)(event_type, data, session_id)
    layer = get_channel_layer()
    if layer is not None:
        try:
            await asyncio.wait_for(send(layer, event.envelope, session_id), SEND_TIMEOUT)
        except Exception as exc:  # refused, timed out: not sent
            if _outboxed(layer):
                _layer_failed(layer, 1, exc)
            return event.envelope
        if _outboxed(layer):
            _layer_answered(layer)
            await database_sync_to_async(Event.mark_sent)([event.id])
    return event.envelope


def relay_unsent(now=None, batch: int = RELAY_BATCH, max_batches: int = 20) -> dict:
    """Send the stored events their publishers could not (the layer was down, or the process ended between
    its commit and its send), oldest first, at most `batch * max_batches` per call; stops at the first
    failure. Events younger than RELAY_GRACE are left to their publisher. Returns {"sent", "pending"}."""
    layer = get_channel_layer()
    if not _outboxed(layer):
        return {"sent": 0, "pending": 0}
    before = (now or timezone.now()) - RELAY_GRACE
    total = 0
    for _ in range(max_batches):
        events = Event.unsent(before, batch)
        if not events:
            break
        sent = _hand_over(layer, events, force=True)
        Event.mark_sent(sent)
        total += len(sent)
        if len(sent) < len(events):
            break
    pending = Event.objects.filter(sent_at__isnull=True).count()
    if total:
        log.info("relayed %d stored event(s) to the channel layer; %d still unsent", total, pending)
    return {"sent": total, "pending": pending}
