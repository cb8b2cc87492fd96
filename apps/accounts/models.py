"""Per-user API keys, stored hashed.

A key looks like `vx11_<prefix>_<secret>`. Only the prefix and a SHA-256 of the whole key
are stored (the key is 256 random bits, so a fast hash is enough, as for GitHub tokens);
the plain key is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

LAST_USED_RESOLUTION = timedelta(minutes=1)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    read_only = models.BooleanField(default=False, help_text="may only read (GET); writes get 403")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…{' read-only' if self.read_only else ''})"

    @classmethod
    def issue(cls, user, name: str, read_only: bool = False) -> tuple[ApiKey, str]:
        """Make a key; return the row and the plain key (shown once, never stored)."""
        prefix = secrets.token_hex(4)
        plain = f"vx11_{prefix}_{secrets.token_urlsafe(32)}"
        return cls.objects.create(
            user=user, name=name, prefix=prefix, key_hash=_digest(plain), read_only=read_only
        ), plain

    @classmethod
    def authenticate(cls, plain: str | None) -> ApiKey | None:
        """The active key matching `plain`, compared in constant time, or None."""
        if not plain or not plain.startswith("vx11_"):
            return None
        parts = plain.split("_", 2)
        if len(parts) != 3:
            return None
        key = cls.objects.select_related("user").filter(prefix=parts[1], revoked=False, user__is_active=True).first()
        if key is None or not hmac.compare_digest(key.key_hash, _digest(plain)):
            return None
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            # a write per request would cost a commit each time; a minute's resolution is enough
            cls.objects.filter(pk=key.pk).update(last_used_at=now)
        return key


def token_is_valid(token: str) -> bool:
    """An X-VX11-Token: the fleet token from the environment (VX11_TOKEN), or a user's API key."""
    if hmac.compare_digest(token.encode(), settings.VX11_TOKEN.encode()):
        return True
    return ApiKey.authenticate(token) is not None


class BadKeyWindow(models.Model):
    """The bad API keys one client address sent in its current minute; beyond VX11_API_KEY_FAILURES_PER_MIN
    every key it sends is refused (429) until the minute ends, so keys cannot be guessed at speed.

    In the database, not in a process: daphne's workers and every portal process share the count, and the
    embedded setup has no Redis. Only addresses with a minute still running have a row."""

    WINDOW = timedelta(minutes=1)

    address = models.CharField(
        max_length=64, unique=True, help_text="REMOTE_ADDR (daphne --proxy-headers sets it behind a proxy)"
    )
    window_start = models.DateTimeField(db_index=True)
    failures = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "bad API key window"

    def __str__(self) -> str:
        return f"{self.address}: {self.failures} bad keys since {self.window_start:%H:%M:%S}"

    @classmethod
    def wait(cls, address: str, now=None) -> int:
        """Seconds until `address` may send keys again; 0: it may now."""
        now = now or timezone.now()
        current = cls.objects.filter(address=address[:64], window_start__gt=now - cls.WINDOW).first()
        if current is None or current.failures < settings.VX11_API_KEY_FAILURES_PER_MIN:
            return 0
        return max(1, math.ceil((current.window_start + cls.WINDOW - now).total_seconds()))

    @classmethod
    def note(cls, address: str, now=None) -> None:
        """Count one bad key from `address`: one UPDATE in a running minute, else a new minute."""
        now = now or timezone.now()
        address = address[:64]
        if cls.objects.filter(address=address, window_start__gt=now - cls.WINDOW).update(failures=F("failures") + 1):
            return
        with transaction.atomic():
            cls.objects.filter(
                window_start__lte=now - cls.WINDOW
            ).delete()  # every ended minute, so the table stays small
            cls.objects.update_or_create(address=address, defaults={"window_start": now, "failures": 1})
