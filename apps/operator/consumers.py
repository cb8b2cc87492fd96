"""WS /ws/{session_id}: the operator event stream as VX11's operator backend v7 serves it. Every event is
one JSON envelope `{type, session_id, timestamp, data, cursor}`, `type` one of the six canonical event types;
the session's events and the broadcasts reach every client of that session.

Auth by `X-VX11-Token` header or `?token=` (browsers cannot set WebSocket headers), or a per-user API key in
either place, or a staff user's Django session (the live admin pages). On connect: a `connected` control
message, then the stored events after `?cursor=`. Incoming `{event_type, data}` is validated and published
on the bus; plain text becomes `message_received`; bad JSON gets `error_reported`. A read-only
API key may subscribe but not publish: what it sends gets `error_reported{error:"read_only"}`.
"""

import asyncio
import hmac
import json
import time
import uuid
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils import timezone
from django.utils.http import is_same_domain

from apps.accounts.models import ApiKey
from apps.events.models import BROADCAST_GROUP, CANONICAL_TYPES, SESSION_ID, Event, apublish, send, session_group

# daphne (autobahn) lets a server close only with 1000 or 3000-4999 and drops the reason text,
# so the codes are 1008/1009 moved into the application range, and the reason is also sent
# as a control message just before the close.
AUTH_REQUIRED = 4401
FORBIDDEN = 4403
POLICY_VIOLATION = 4008
TOO_BIG = 4009
DEFAULT_PORTS = {"http": 80, "https": 443}


def token_may_publish(token: str) -> bool | None:
    """None: not a valid X-VX11-Token; False: a read-only API key; True: VX11_TOKEN or a read-write key."""
    if hmac.compare_digest(token.encode(), settings.VX11_TOKEN.encode()):
        return True
    key = ApiKey.authenticate(token)
    return None if key is None else not key.read_only


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin, default port filled in; None for anything else
    ("null", a path, credentials, a bad port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def same_origin(origin: str, host: str, secure: bool) -> bool:
    """As Django's CSRF Origin check: `origin` is this request's own (its Host, when ALLOWED_HOSTS has it,
    with the request's scheme) or one of CSRF_TRUSTED_ORIGINS, comparing scheme, host and port."""
    theirs = origin_of(origin)
    if theirs is None:
        return False
    own_host = bool(host) and validate_host(split_domain_port(host)[0], settings.ALLOWED_HOSTS)
    if own_host and theirs == origin_of(f"{'https' if secure else 'http'}://{host}"):
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" in trusted:  # Django's form for every subdomain: https://*.example.com
            parts = urlsplit(trusted)
            if parts.scheme == theirs[0] and is_same_domain(urlsplit(origin).netloc.lower(), parts.netloc.lstrip("*")):
                return True
        elif theirs == origin_of(trusted):
            return True
    return False


class TokenBucket:
    """`rate` messages a second sustained, `burst` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.capacity, self.tokens, self.at = rate, burst, float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class StoredEventRelay:
    """With the in-memory layer, events published by other processes (the Celery worker) never
    reach daphne's layer; the stored events are the source of truth. One relay per process and
    event loop reads the new ones every VX11_WS_POLL_SECONDS and hands them to this process's
    groups, so the cost is one query per interval, not one per client."""

    task: asyncio.Task | None = None

    @classmethod
    async def ensure_running(cls, layer) -> None:
        loop = asyncio.get_running_loop()
        if cls.task is None or cls.task.done() or cls.task.get_loop() is not loop:
            cursor = await database_sync_to_async(Event.latest_id)()
            cls.task = loop.create_task(cls.run(layer, cursor))

    @classmethod
    async def run(cls, layer, cursor: int) -> None:
        while True:
            await asyncio.sleep(settings.VX11_WS_POLL_SECONDS)
            for event in await database_sync_to_async(Event.after)(cursor):
                cursor = event.id
                await send(layer, event.envelope, event.session_id or None)


class EventConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        query = parse_qs(self.scope.get("query_string", b"").decode())
        headers = {k.decode().lower(): v.decode() for k, v in self.scope.get("headers", [])}
        token = headers.get("x-vx11-token") or (query.get("token") or [""])[0]

        await self.accept()
        self.may_publish = True
        if self.staff_session(headers):
            pass  # the live admin pages: a staff session from our own origin needs no token
        elif not token:
            return await self.refuse(AUTH_REQUIRED, "auth_required", "send X-VX11-Token or ?token=")
        else:
            self.may_publish = await database_sync_to_async(token_may_publish)(token)
            if self.may_publish is None:
                return await self.refuse(FORBIDDEN, "forbidden", "invalid token")
        if not SESSION_ID.match(self.session_id):
            return await self.refuse(POLICY_VIOLATION, "invalid_session_id", "1-64 of A-Z a-z 0-9 _ . -")

        self.client_id = uuid.uuid4().hex
        self.bucket = TokenBucket(settings.VX11_WS_RATE, settings.VX11_WS_BURST)
        self.strikes = 0
        self.groups_joined = [session_group(self.session_id), BROADCAST_GROUP]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.send_json(
            {"channel": "control", "type": "connected", "client_id": self.client_id, "session_id": self.session_id}
        )

        self.sent: dict[int, None] = {}  # recent cursors, oldest first: one event, one frame
        if settings.VX11_WS_POLL_SECONDS > 0:
            await StoredEventRelay.ensure_running(self.channel_layer)
        cursor = (query.get("cursor") or [""])[0]
        if cursor:
            if not cursor.isdigit():
                await self.send_json(
                    {
                        "channel": "control",
                        "type": "error",
                        "error": "invalid_cursor",
                        "detail": "cursor must be a non-negative integer",
                    }
                )
            else:
                for event in await database_sync_to_async(Event.replay)(self.session_id, int(cursor)):
                    if self.first_time(event.id):
                        await self.send_json({**event.envelope, "replayed": True})

    def staff_session(self, headers: dict) -> bool:
        """A staff user's session cookie counts only from a page of ours (no cross-site hijacking)."""
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.is_staff):
            return False
        return same_origin(headers.get("origin", ""), headers.get("host", ""), self.scope.get("scheme") == "wss")

    def first_time(self, cursor: int) -> bool:
        """False for an event this client already had (replay, relay and layer may overlap)."""
        if cursor in self.sent:
            return False
        self.sent[cursor] = None
        if len(self.sent) > 2000:
            del self.sent[next(iter(self.sent))]
        return True

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if not hasattr(self, "client_id"):
            return
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw.encode()) > settings.VX11_WS_MAX_FRAME:
            return await self.refuse(
                TOO_BIG, "frame_too_big", f"frames are limited to {settings.VX11_WS_MAX_FRAME} bytes"
            )
        if not self.bucket.take():
            self.strikes += 1
            if self.strikes > settings.VX11_WS_BURST:
                return await self.refuse(POLICY_VIOLATION, "rate_limited", "rate limit exceeded repeatedly")
            return await self.send_json(self.error("rate_limited", f"over {settings.VX11_WS_RATE:g} messages/s"))
        self.strikes = 0
        if not self.may_publish:
            # the subscription stays: reading is what the key is for (the API answers its writes 403)
            refusal = self.error("read_only", "this API key is read-only: it may subscribe, not publish")
            return await self.send_json(refusal)
        await self.handle_text(raw)

    async def handle_text(self, raw: str):
        stripped = raw.strip()
        if not stripped.startswith(("{", "[")):
            await apublish("message_received", {"message": raw, "client_id": self.client_id}, self.session_id)
            return
        try:
            message = json.loads(stripped)
        except ValueError:
            return await self.send_json(self.error("invalid_json", raw=raw[:1000]))
        if not isinstance(message, dict) or "event_type" not in message:
            return await self.send_json(
                self.error("invalid_event", 'expected {"event_type": ..., "data": {...}}', raw=raw[:1000])
            )
        event_type, data = message.get("event_type"), message.get("data", {})
        if not isinstance(data, dict):
            data = {"value": data}
        if event_type not in CANONICAL_TYPES:
            # as the real backend does: an unknown type becomes status_changed with a note
            data = {**data, "note": f"unknown event_type {str(event_type)[:64]!r} mapped to status_changed"}
            event_type = "status_changed"
        await apublish(event_type, {**data, "client_id": self.client_id}, self.session_id)

    async def refuse(self, code: int, error: str, detail: str):
        await self.send_json({"channel": "control", "type": "closing", "error": error, "detail": detail, "code": code})
        await self.close(code, f"{error}: {detail}")

    def error(self, error: str, detail: str = "", raw: str | None = None) -> dict:
        """An error_reported envelope for this client only (not stored, not broadcast)."""
        data = {"error": error}
        if detail:
            data["detail"] = detail
        if raw is not None:
            data["raw"] = raw
        return {"type": "error_reported", "session_id": self.session_id, "timestamp": _now_iso(), "data": data}

    async def dispatch(self, message):
        # Channels runs aclose_old_connections() (a thread-pool hop) before every handler; a
        # forwarded event never touches the database, and skipping the hop halved the CPU per
        # frame in bench/ws_fanout.py (240 -> 116 us).
        if message.get("type") == "vx11.event":
            return await self.vx11_event(message)
        return await super().dispatch(message)

    async def vx11_event(self, message):
        event = message["event"]
        if self.first_time(event["cursor"]):
            await self.send_json(event)

    async def send_json(self, content: dict):
        await self.send(text_data=json.dumps(content))


def _now_iso() -> str:
    return timezone.now().isoformat().replace("+00:00", "Z")
