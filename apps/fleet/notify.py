"""Notifications: state changes go out to webhooks and e-mail, once each, with retries.

One sweep (the `send_notifications` beat task, every 10 s) does two things:

1. claim_state_changes: each new StateChange is claimed exactly once with a conditional UPDATE
   (`claimed_at IS NULL` -> now); the worker whose UPDATE changed the row creates one Delivery per
   channel that wants the module, in the same transaction. A module inside a maintenance window at
   the moment of the change gets "muted" deliveries, which are never sent.
2. send_due: each pending Delivery whose next_attempt_at has come is claimed with another
   conditional UPDATE (attempts n -> n+1, next_attempt_at -> now + backoff) and only then sent; a
   failure leaves it pending until that backoff has passed, and after Delivery.MAX_ATTEMPTS it is failed.

So several workers can run the same sweep at once and nothing is sent twice. Claiming first also
means a worker that dies mid-send only delays that delivery by its backoff.

Every function takes `now`, so tests drive time instead of sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from vx11_site import outbound

from .models import Delivery, MaintenanceWindow, NotificationChannel, State, StateChange

WEBHOOK_TIMEOUT = 5.0
SIGNATURE_HEADER = "X-VX11-Signature"
DELIVERY_HEADER = "X-VX11-Delivery"


class DeliveryError(Exception):
    """The receiver did not take the notification (non-2xx answer)."""


def is_newsworthy(change: StateChange) -> bool:
    """Everything but a module's very first good result (unknown -> up), which is not news."""
    return not (change.from_state == State.UNKNOWN and change.to_state == State.UP)


def payload(change: StateChange) -> dict:
    return {"event": "status_changed", **change.event_data}


def sign(secret: str, body: bytes) -> str:
    """The X-VX11-Signature value: sha256=<hex HMAC-SHA256 of the exact body bytes>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- 1. claim new state changes -------------------------------------------------------------


def claim_state_changes(now: datetime | None = None, limit: int = 500) -> dict:
    """Claim unclaimed state changes, oldest first, and create their deliveries."""
    now = now or timezone.now()
    candidates = list(
        StateChange.objects.filter(claimed_at__isnull=True).select_related("module").order_by("at", "id")[:limit]
    )
    counts = {"claimed": 0, "queued": 0, "muted": 0}
    if not candidates:
        return counts
    channels = list(NotificationChannel.objects.filter(enabled=True).prefetch_related("modules"))
    for change in candidates:
        with transaction.atomic():
            if StateChange.objects.filter(id=change.id, claimed_at__isnull=True).update(claimed_at=now) != 1:
                continue  # another worker has it
            counts["claimed"] += 1
            targets = [c for c in channels if c.covers(change.module_id)] if is_newsworthy(change) else []
            if not targets:
                continue
            muted = MaintenanceWindow.module_in_window(change.module_id, change.at)
            status = Delivery.Status.MUTED if muted else Delivery.Status.PENDING
            Delivery.objects.bulk_create(
                [
                    Delivery(
                        state_change=change,
                        channel=channel,
                        status=status,
                        next_attempt_at=None if muted else now,
                        created=now,
                    )
                    for channel in targets
                ],
                ignore_conflicts=True,  # the unique (change, channel) constraint is the last line of defence
            )
            counts["muted" if muted else "queued"] += len(targets)
    return counts


# --- 2. send due deliveries -------------------------------------------------------------------


def send_webhook(
    channel: NotificationChannel, change: StateChange, client: httpx.Client, delivery_id: int | None = None
) -> None:
    body = json.dumps(payload(change), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "VX11-Ops-Portal"}
    if channel.secret:
        headers[SIGNATURE_HEADER] = sign(channel.secret, body)
    if delivery_id is not None:
        headers[DELIVERY_HEADER] = str(delivery_id)  # lets a receiver drop a repeat after a lost answer
    response = client.post(channel.target, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT)
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"HTTP {response.status_code}")


def send_email(channel: NotificationChannel, change: StateChange) -> None:
    slug = change.slug
    subject = f"[VX11] {slug} is {change.to_state}"
    body = (
        f"{slug} is {change.to_state} (was {change.from_state}) since {change.at.isoformat()}.\n\n"
        f"Reason: {change.reason}\n"
    )
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, channel.recipients, fail_silently=False)


def deliver(delivery: Delivery, client: httpx.Client) -> None:
    """Send one delivery; raise on any failure."""
    channel, change = delivery.channel, delivery.state_change
    if channel.kind == NotificationChannel.Kind.WEBHOOK:
        send_webhook(channel, change, client, delivery.id)
    else:
        send_email(channel, change)


def describe(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, DeliveryError):
        return text[:500]
    return (outbound.why(exc) or (f"{type(exc).__name__}: {text}" if text else type(exc).__name__))[:500]


def send_due(now: datetime | None = None, limit: int = 100) -> dict:
    """Claim and send pending deliveries whose time has come."""
    now = now or timezone.now()
    counts = {"sent": 0, "retrying": 0, "failed": 0}
    pending = Delivery.objects.filter(status=Delivery.Status.PENDING)

    # given up: out of attempts (a worker died after its last claim) or the channel was switched off
    counts["failed"] += pending.filter(attempts__gte=Delivery.MAX_ATTEMPTS, next_attempt_at__lte=now).update(
        status=Delivery.Status.FAILED, next_attempt_at=None
    )
    counts["failed"] += pending.filter(channel__enabled=False).update(
        status=Delivery.Status.FAILED, next_attempt_at=None, last_error="channel disabled before sending"
    )

    due = list(
        pending.filter(next_attempt_at__lte=now).order_by("next_attempt_at", "id").values_list("id", "attempts")[:limit]
    )
    with outbound.client() as client:
        for delivery_id, attempts in due:
            attempt = attempts + 1
            claimed = pending.filter(id=delivery_id, attempts=attempts, next_attempt_at__lte=now).update(
                attempts=attempt, next_attempt_at=now + Delivery.backoff(attempt)
            )
            if claimed != 1:
                continue  # another worker took this attempt
            delivery = Delivery.objects.select_related("channel", "state_change__module").get(id=delivery_id)
            try:
                deliver(delivery, client)
            except SoftTimeLimitExceeded:
                raise  # the claim stands: the delivery is retried after its backoff
            except Exception as exc:
                mine = Delivery.objects.filter(id=delivery_id, status=Delivery.Status.PENDING, attempts=attempt)
                if attempt >= Delivery.MAX_ATTEMPTS:
                    mine.update(status=Delivery.Status.FAILED, next_attempt_at=None, last_error=describe(exc))
                    counts["failed"] += 1
                else:
                    mine.update(last_error=describe(exc))  # next_attempt_at was set by the claim
                    counts["retrying"] += 1
            else:
                Delivery.objects.filter(id=delivery_id, status=Delivery.Status.PENDING).update(
                    status=Delivery.Status.SENT, sent_at=now, next_attempt_at=None, last_error=""
                )
                counts["sent"] += 1
    return counts


def sweep(now: datetime | None = None) -> dict:
    """One run of the beat task: claim new changes, send what is due, prune old deliveries."""
    now = now or timezone.now()
    result = claim_state_changes(now)
    result.update(send_due(now))
    result["pruned"] = Delivery.prune(now)
    return result
