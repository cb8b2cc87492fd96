"""The fleet: VX11 modules, their health checks, state changes and rolled-up history.

State follows Gatus-like thresholds: a module goes down after `down_after` failures in a
row and comes back after `up_after` successes in a row, so a single blip does not flap.
Raw checks are kept for VX11_RAW_RETENTION_HOURS and rolled up per minute, hour and day;
uptime and latency series come from the rollups only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models, transaction
from django.db.models import Max, Sum
from django.utils import timezone

from apps.events.models import publish
from vx11_site import outbound
from vx11_site.db import bulk_set, prune_in_chunks


def default_accepted_statuses() -> list[str]:
    return ["ok"]


def default_timeout() -> float:
    return settings.VX11_PROBE_DEFAULT_TIMEOUT


class Outcome(models.TextChoices):
    OK = "ok", "ok"
    SLOW = "slow", "slow (over the latency threshold)"
    FAIL = "fail", "failed"


class State(models.TextChoices):
    UP = "up", "up"
    DEGRADED = "degraded", "degraded"
    DOWN = "down", "down"
    UNKNOWN = "unknown", "unknown"


@dataclass(frozen=True)
class ProbeResult:
    """What one probe of one module found. Built by apps.fleet.probe, stored by record_round."""

    module_id: int
    slug: str
    checked_at: datetime
    outcome: str
    status_code: int | None = None
    latency_ms: float | None = None
    status_value: str = ""
    error: str = ""

    def as_dict(self, state: str | None = None) -> dict:
        return {
            "slug": self.slug,
            "state": state,
            "outcome": self.outcome,
            "status_code": self.status_code,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "status": self.status_value or None,
            "error": self.error or None,
            "checked_at": self.checked_at.isoformat(),
        }


def validate_statuses(value) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValidationError('accepted statuses must be a non-empty list of strings, e.g. ["ok"]')


def validate_http_url(value: str) -> None:
    URLValidator(schemes=["http", "https"])(value)
    parts = urlsplit(value)
    if parts.query or parts.fragment:
        raise ValidationError("base URL must not carry a query or fragment")
    check_outbound(value)


def check_outbound(url: str) -> None:
    """The outbound policy at save time: a target the portal would refuse to call is not saved."""
    try:
        outbound.check_url(url)
    except outbound.Refused as exc:
        raise ValidationError(str(exc)) from None


class Module(models.Model):
    """A VX11 service the portal watches (and later controls)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    base_url = models.CharField(max_length=300, validators=[validate_http_url], help_text="e.g. http://127.0.0.1:8001")
    health_path = models.CharField(max_length=200, default="/health")
    port = models.PositiveIntegerField(null=True, blank=True, editable=False, help_text="taken from the base URL")
    role = models.CharField(max_length=200, blank=True)
    core = models.BooleanField(
        default=False, help_text="one of the five core modules; a core module down fails `vx11 probe`"
    )
    enabled = models.BooleanField(default=True)
    accepted_statuses = models.JSONField(default=default_accepted_statuses, validators=[validate_statuses])
    timeout = models.FloatField(
        default=default_timeout, validators=[MinValueValidator(0.05), MaxValueValidator(60)], help_text="seconds"
    )
    degraded_latency_ms = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="slower than this counts as degraded"
    )
    down_after = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1)], help_text="failures in a row before down"
    )
    up_after = models.PositiveSmallIntegerField(
        default=2, validators=[MinValueValidator(1)], help_text="successes in a row before up"
    )
    owned_tables = models.JSONField(
        default=list, blank=True, help_text="DB tables (or prefixes with *) this module owns"
    )
    simulated = models.BooleanField(
        default=False, help_text="served by the demo fleet's simulator (apps.simfleet), not the real module"
    )

    state = models.CharField(max_length=10, choices=State.choices, default=State.UNKNOWN)
    state_since = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=4, choices=Outcome.choices, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_latency_ms = models.FloatField(null=True, blank=True)
    last_status_value = models.CharField(max_length=64, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    outcome_streak = models.PositiveIntegerField(default=0, help_text="results in a row equal to last_outcome")
    success_streak = models.PositiveIntegerField(default=0, help_text="ok or slow results in a row")
    uptime_24h = models.FloatField(null=True, blank=True)
    uptime_7d = models.FloatField(null=True, blank=True)
    uptime_30d = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["port", "slug"]

    def __str__(self) -> str:
        return self.slug

    def save(self, *args, **kwargs):
        self.port = urlsplit(self.base_url).port
        super().save(*args, **kwargs)

    @property
    def health_url(self) -> str:
        return self.base_url.rstrip("/") + "/" + self.health_path.lstrip("/")

    def apply_result(self, result: ProbeResult) -> StateChange | None:
        """Fold one probe result into the current state; return the unsaved change, if any."""
        if result.outcome == self.last_outcome:
            self.outcome_streak += 1
        else:
            self.outcome_streak = 1
        self.success_streak = 0 if result.outcome == Outcome.FAIL else self.success_streak + 1
        self.last_outcome = result.outcome
        self.last_checked_at = result.checked_at
        self.last_status_code = result.status_code
        self.last_latency_ms = result.latency_ms
        self.last_status_value = result.status_value[:64]
        self.last_error = result.error[:500]

        target = {Outcome.OK: State.UP, Outcome.SLOW: State.DEGRADED, Outcome.FAIL: State.DOWN}[result.outcome]
        if target == self.state:
            return None
        if self.state == State.UNKNOWN:
            reason = f"first result: {self._describe(result)}"
        elif target == State.DOWN:
            if self.outcome_streak < self.down_after:
                return None
            reason = f"{self.outcome_streak} failures in a row: {result.error}"
        elif self.state == State.DOWN:
            if self.success_streak < self.up_after:
                return None
            reason = f"{self.success_streak} successes in a row: {self._describe(result)}"
        else:  # between up and degraded
            if self.outcome_streak < self.up_after:
                return None
            reason = f"{self.outcome_streak} {result.outcome} results in a row: {self._describe(result)}"
        change = StateChange(
            module=self, at=result.checked_at, from_state=self.state, to_state=target, reason=reason[:500]
        )
        self.state = target
        self.state_since = result.checked_at
        return change

    def _describe(self, result: ProbeResult) -> str:
        if result.outcome == Outcome.FAIL:
            return result.error
        text = f"status {result.status_value!r} in {result.latency_ms:.0f} ms"
        if result.outcome == Outcome.SLOW:
            text += f" (over {self.degraded_latency_ms:.0f} ms)"
        return text

    STATE_FIELDS = [
        "state",
        "state_since",
        "last_checked_at",
        "last_outcome",
        "last_status_code",
        "last_latency_ms",
        "last_status_value",
        "last_error",
        "outcome_streak",
        "success_streak",
    ]

    @classmethod
    def fleet_summary(cls, rows: list[dict] | None = None) -> dict:
        """Counts per state of the enabled modules, core modules down, how many are simulated.

        `rows`: enabled modules as dicts with slug, state, core and simulated, when the caller
        has them already (the API overview reads the fleet once).
        """
        if rows is None:
            rows = list(cls.objects.filter(enabled=True).values("slug", "state", "core", "simulated"))
        summary = dict.fromkeys(State.values, 0)
        for row in rows:
            summary[row["state"]] += 1
        summary["total"] = len(rows)
        summary["core_down"] = [r["slug"] for r in rows if r["core"] and r["state"] == State.DOWN]
        summary["simulated"] = sum(r["simulated"] for r in rows)
        return summary


class HealthCheck(models.Model):
    """One raw probe result. Kept for VX11_RAW_RETENTION_HOURS, then only in rollups."""

    module = models.ForeignKey(Module, on_delete=models.CASCADE, related_name="checks")
    checked_at = models.DateTimeField()
    outcome = models.CharField(max_length=4, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    status_value = models.CharField(max_length=64, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-checked_at"]
        indexes = [
            # module history API (raw resolution, newest first)
            models.Index(fields=["module", "-checked_at"], name="check_module_time"),
            # rollups (closed buckets) and prune_raw (age cut-off)
            models.Index(fields=["checked_at"], name="check_time"),
        ]

    def __str__(self) -> str:
        return f"{self.module_id}: {self.outcome} at {self.checked_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def record_round(cls, results: list[ProbeResult]) -> list[StateChange]:
        """Store a round in one bulk insert and fold it into each module's state."""
        if not results:
            return []
        by_module = {r.module_id: r for r in results}
        with transaction.atomic():
            cls.objects.bulk_create(
                [
                    cls(
                        module_id=r.module_id,
                        checked_at=r.checked_at,
                        outcome=r.outcome,
                        status_code=r.status_code,
                        latency_ms=r.latency_ms,
                        status_value=r.status_value[:64],
                        error=r.error[:500],
                    )
                    for r in results
                ],
                batch_size=1000,
            )
            modules = list(Module.objects.select_for_update().filter(id__in=by_module))
            changes = [c for m in modules if (c := m.apply_result(by_module[m.id])) is not None]
            bulk_set(modules, Module.STATE_FIELDS)
            StateChange.objects.bulk_create(changes)
            transaction.on_commit(lambda: [c.announce() for c in changes])
        return changes

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        """Delete raw checks older than the retention window that the rollups already cover."""
        now = now or timezone.now()
        cutoff = now - timedelta(hours=settings.VX11_RAW_RETENTION_HOURS)
        # never drop raw rows that are not rolled up yet (hour rollups are built from raw)
        hour_end = Rollup.watermark(Rollup.Period.HOUR)
        cutoff = min(cutoff, hour_end) if hour_end else None
        if cutoff is None:
            return 0
        return prune_in_chunks(cls.objects.filter(checked_at__lt=cutoff))


# what a StateChange without a module is about: the portal itself (its scheduler, apps.fleet.watchdog)
PORTAL = "portal"


class StateChange(models.Model):
    """Every state transition of a module, or with no module of the portal's own scheduler: when, from, to and why."""

    module = models.ForeignKey(
        Module,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="state_changes",
        help_text="empty: the portal itself (scheduler stalled or recovered)",
    )
    at = models.DateTimeField()
    from_state = models.CharField(max_length=10, choices=State.choices)
    to_state = models.CharField(max_length=10, choices=State.choices)
    reason = models.CharField(max_length=500)
    # set once, by the notification sweep's conditional UPDATE (apps.fleet.notify.claim_state_changes);
    # indexed for that sweep's "claimed_at IS NULL" scan
    claimed_at = models.DateTimeField(
        null=True,
        blank=True,
        db_index=True,
        editable=False,
        help_text="when the notification sweep took this change (null = not yet)",
    )

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # module page and the state-changes API, newest first
            models.Index(fields=["module", "-at"], name="change_module_time"),
            # prune by age: StateChange.prune()
            models.Index(fields=["at"], name="change_time"),
        ]

    def __str__(self) -> str:
        return f"{self.module_id or PORTAL}: {self.from_state} → {self.to_state}"

    @property
    def slug(self) -> str:
        return self.module.slug if self.module_id else PORTAL

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        """State changes are kept as long as daily rollups (their deliveries go with them)."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.VX11_DAY_RETENTION_DAYS)
        return prune_in_chunks(cls.objects.filter(at__lt=cutoff))

    @property
    def event_data(self) -> dict:
        """What a listener is told of this change (the bus event, webhooks)."""
        return {
            "module": self.slug,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }

    def announce(self) -> None:
        """Tell every listener (WebSocket clients, the live admin) as a canonical status_changed event."""
        publish("status_changed", self.event_data)


def p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Totals:
    """Checks and failed checks, added up over some rollups or raw checks of one module."""

    count: int = 0
    failures: int = 0

    @property
    def uptime(self) -> float | None:
        return 100.0 * (self.count - self.failures) / self.count if self.count else None


@dataclass
class RawTotals(Totals):
    """One minute or hour bucket as its raw checks are read, with the latency of every answered check."""

    latencies: list[float] = field(default_factory=list)

    def add(self, outcome: str, latency: float | None) -> None:
        self.count += 1
        self.failures += outcome == Outcome.FAIL
        if latency is not None:
            self.latencies.append(latency)

    def rollup_fields(self) -> dict:
        latencies = self.latencies
        return {
            "count": self.count,
            "failures": self.failures,
            "latency_samples": len(latencies),
            "latency_min": min(latencies) if latencies else None,
            "latency_avg": sum(latencies) / len(latencies) if latencies else None,
            "latency_p95": p95(latencies),
            "latency_max": max(latencies) if latencies else None,
        }


@dataclass
class HourlyTotals(Totals):
    """One day bucket as its hour rollups are read: the extremes of the hours, and the sums of their
    averages and p95s weighted by latency samples."""

    samples: int = 0
    mins: list[float] = field(default_factory=list)
    maxs: list[float] = field(default_factory=list)
    avg_sum: float = 0.0
    p95_sum: float = 0.0

    def add(self, hour: Rollup) -> None:
        self.count += hour.count
        self.failures += hour.failures
        self.samples += hour.latency_samples
        if hour.latency_samples:
            self.mins.append(hour.latency_min)
            self.maxs.append(hour.latency_max)
            self.avg_sum += hour.latency_avg * hour.latency_samples
            self.p95_sum += hour.latency_p95 * hour.latency_samples

    def rollup_fields(self) -> dict:
        samples = self.samples
        return {
            "count": self.count,
            "failures": self.failures,
            "latency_samples": samples,
            "latency_min": min(self.mins) if self.mins else None,
            "latency_avg": self.avg_sum / samples if samples else None,
            "latency_p95": self.p95_sum / samples if samples else None,
            "latency_max": max(self.maxs) if self.maxs else None,
        }


class Rollup(models.Model):
    """Aggregates of a module's checks over one minute, hour or day.

    Minutes and hours are computed from raw checks (exact p95); days from hours, where
    p95 is the latency-sample-weighted mean of the hourly p95s (an approximation).
    Latency figures cover checks that got an HTTP answer; failures count every failed check.
    """

    class Period(models.TextChoices):
        MINUTE = "minute"
        HOUR = "hour"
        DAY = "day"

    SIZES = {Period.MINUTE: timedelta(minutes=1), Period.HOUR: timedelta(hours=1), Period.DAY: timedelta(days=1)}
    # checks of a round are inserted when the round ends: wait this long before closing a bucket
    GRACE = timedelta(seconds=90)

    module = models.ForeignKey(Module, on_delete=models.CASCADE, related_name="rollups")
    period = models.CharField(max_length=6, choices=Period.choices)
    bucket_start = models.DateTimeField()
    count = models.PositiveIntegerField()
    failures = models.PositiveIntegerField()
    latency_samples = models.PositiveIntegerField(default=0)
    latency_min = models.FloatField(null=True)
    latency_avg = models.FloatField(null=True)
    latency_p95 = models.FloatField(null=True)
    latency_max = models.FloatField(null=True)

    class Meta:
        ordering = ["-bucket_start"]
        constraints = [
            # one row per bucket; also serves the module history API (rolled-up resolution)
            models.UniqueConstraint(fields=["module", "period", "bucket_start"], name="rollup_unique_bucket"),
        ]
        indexes = [
            # uptime refresh (sum per module since a time), watermark and prune by age
            models.Index(fields=["period", "bucket_start"], name="rollup_period_time"),
        ]

    def __str__(self) -> str:
        return f"{self.module_id}: {self.period} from {self.bucket_start:%Y-%m-%d %H:%M}"

    @property
    def uptime(self) -> float | None:
        return None if not self.count else 100.0 * (self.count - self.failures) / self.count

    @classmethod
    def floor(cls, moment: datetime, period: str) -> datetime:
        if period == cls.Period.MINUTE:
            return moment.replace(second=0, microsecond=0)
        if period == cls.Period.HOUR:
            return moment.replace(minute=0, second=0, microsecond=0)
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)

    @classmethod
    def watermark(cls, period: str) -> datetime | None:
        """End of the newest bucket rolled up for this period (all modules roll up together)."""
        last = cls.objects.filter(period=period).aggregate(m=Max("bucket_start"))["m"]
        return last + cls.SIZES[period] if last else None

    @classmethod
    def roll_up(cls, now: datetime | None = None) -> dict[str, int]:
        """Roll every closed, not yet rolled-up bucket; idempotent (upserts)."""
        now = now or timezone.now()
        written = {}
        for period in (cls.Period.MINUTE, cls.Period.HOUR):
            written[period] = cls._roll_from_raw(period, now)
        written[cls.Period.DAY] = cls._roll_days_from_hours(now)
        return written

    @classmethod
    def _window(
        cls, period: str, now: datetime, first_source_time: datetime | None
    ) -> tuple[datetime, datetime] | None:
        end = cls.floor(now - cls.GRACE, period)
        start = cls.watermark(period)
        if start is None:
            if first_source_time is None:
                return None
            start = cls.floor(first_source_time, period)
        return (start, end) if start < end else None

    @classmethod
    def _roll_from_raw(cls, period: str, now: datetime) -> int:
        first = HealthCheck.objects.aggregate(m=models.Min("checked_at"))["m"]
        window = cls._window(period, now, first)
        if window is None:
            return 0
        start, end = window
        buckets: dict[tuple[int, datetime], RawTotals] = defaultdict(RawTotals)
        rows = HealthCheck.objects.filter(checked_at__gte=start, checked_at__lt=end).values_list(
            "module_id", "checked_at", "outcome", "latency_ms"
        )
        for module_id, checked_at, outcome, latency in rows.iterator(chunk_size=5000):
            buckets[(module_id, cls.floor(checked_at, period))].add(outcome, latency)
        objs = [
            cls(module_id=module_id, period=period, bucket_start=bucket_start, **totals.rollup_fields())
            for (module_id, bucket_start), totals in buckets.items()
        ]
        cls._upsert(objs)
        return len(objs)

    @classmethod
    def _roll_days_from_hours(cls, now: datetime) -> int:
        hours = cls.objects.filter(period=cls.Period.HOUR)
        first = hours.aggregate(m=models.Min("bucket_start"))["m"]
        window = cls._window(cls.Period.DAY, now, first)
        if window is None:
            return 0
        start, end = window
        # a day is closed only once its last hour is rolled up
        hour_end = cls.watermark(cls.Period.HOUR)
        end = min(end, cls.floor(hour_end, cls.Period.DAY)) if hour_end else start
        if start >= end:
            return 0
        buckets: dict[tuple[int, datetime], HourlyTotals] = defaultdict(HourlyTotals)
        for hour in hours.filter(bucket_start__gte=start, bucket_start__lt=end).iterator(chunk_size=5000):
            buckets[(hour.module_id, cls.floor(hour.bucket_start, cls.Period.DAY))].add(hour)
        objs = [
            cls(module_id=module_id, period=cls.Period.DAY, bucket_start=day, **totals.rollup_fields())
            for (module_id, day), totals in buckets.items()
        ]
        cls._upsert(objs)
        return len(objs)

    @classmethod
    def _upsert(cls, objs: list[Rollup]) -> None:
        cls.objects.bulk_create(
            objs,
            batch_size=1000,
            update_conflicts=True,
            unique_fields=["module", "period", "bucket_start"],
            update_fields=[
                "count",
                "failures",
                "latency_samples",
                "latency_min",
                "latency_avg",
                "latency_p95",
                "latency_max",
            ],
        )

    @classmethod
    def ceil(cls, moment: datetime, period: str) -> datetime:
        floor = cls.floor(moment, period)
        return floor if floor == moment else floor + cls.SIZES[period]

    @classmethod
    def uptimes_since(cls, since: datetime) -> dict[int, float]:
        """Uptime % per module since a moment: whole days, then hours, then minutes, no overlap.

        Each level is read only over the ranges the coarser levels did not cover, as plain
        index ranges (an exclude() over the whole window made SQLite scan every hour row).
        """
        totals: dict[int, Totals] = defaultdict(Totals)
        covered: list[tuple[datetime, datetime]] = []
        for period in (cls.Period.DAY, cls.Period.HOUR, cls.Period.MINUTE):
            start, end = cls.ceil(since, period), cls.watermark(period)
            if end is None or start >= end:
                continue
            for a, b in _uncovered(start, end, covered):
                rows = cls.objects.filter(period=period, bucket_start__gte=a, bucket_start__lt=b)
                for row in rows.values("module_id").annotate(c=Sum("count"), f=Sum("failures")):
                    module_totals = totals[row["module_id"]]
                    module_totals.count += row["c"]
                    module_totals.failures += row["f"]
            covered.append((start, end))
        return {module_id: t.uptime for module_id, t in totals.items() if t.uptime is not None}

    @classmethod
    def refresh_uptimes(cls, now: datetime | None = None) -> None:
        now = now or timezone.now()
        windows = {"uptime_24h": timedelta(hours=24), "uptime_7d": timedelta(days=7), "uptime_30d": timedelta(days=30)}
        values = {column: cls.uptimes_since(now - span) for column, span in windows.items()}
        changed = []
        for m in Module.objects.only("id", *windows):
            new = {column: values[column].get(m.id) for column in windows}
            if any(getattr(m, column) != value for column, value in new.items()):
                for column, value in new.items():
                    setattr(m, column, value)
                changed.append(m)
        bulk_set(changed, list(windows))

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        now = now or timezone.now()
        keep = {
            cls.Period.MINUTE: timedelta(days=settings.VX11_MINUTE_RETENTION_DAYS),
            cls.Period.HOUR: timedelta(days=settings.VX11_HOUR_RETENTION_DAYS),
            cls.Period.DAY: timedelta(days=settings.VX11_DAY_RETENTION_DAYS),
        }
        return sum(
            prune_in_chunks(cls.objects.filter(period=p, bucket_start__lt=now - span)) for p, span in keep.items()
        )


def _uncovered(
    start: datetime, end: datetime, covered: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) outside every covered interval."""
    parts = [(start, end)]
    for a, b in covered:
        parts = [piece for lo, hi in parts for piece in ((lo, min(hi, a)), (max(lo, b), hi)) if piece[0] < piece[1]]
    return parts


def maintain_history(now: datetime | None = None) -> dict:
    """Roll up, refresh uptimes, prune: the minutely housekeeping of the fleet's history."""
    now = now or timezone.now()
    written = Rollup.roll_up(now)
    Rollup.refresh_uptimes(now)
    pruned_raw = HealthCheck.prune(now)
    pruned_rollups = Rollup.prune(now)
    pruned_changes = StateChange.prune(now)
    pruned_windows = MaintenanceWindow.prune(now)
    return {
        "rolled_up": written,
        "pruned_raw": pruned_raw,
        "pruned_rollups": pruned_rollups,
        "pruned_changes": pruned_changes,
        "pruned_windows": pruned_windows,
    }


__all__ = ["Module", "HealthCheck", "StateChange", "Rollup", "ProbeResult", "Outcome", "State", "maintain_history"]


# --- Notifications and maintenance windows ------------------------------------------------
# The sending lives in apps.fleet.notify; these are the rows it works on.


def parse_addresses(value: str) -> list[str]:
    return [a.strip() for a in value.split(",") if a.strip()]


class NotificationChannel(models.Model):
    """Somewhere state changes are sent: a webhook URL or a list of e-mail addresses.

    A webhook POSTs JSON signed with `secret` (header X-VX11-Signature: sha256=<hex HMAC-SHA256 of
    the body>); an empty secret means the POST goes unsigned. No modules selected = every module.
    """

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "webhook (JSON POST)"
        EMAIL = "email", "e-mail"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=7, choices=Kind.choices, default=Kind.WEBHOOK)
    target = models.CharField(max_length=1000, help_text="webhook: the URL; e-mail: comma-separated addresses")
    secret = models.CharField(
        max_length=200, blank=True, help_text="webhook HMAC-SHA256 key, stored as given; empty = unsigned"
    )
    modules = models.ManyToManyField(
        Module, blank=True, related_name="notification_channels", help_text="none selected = every module"
    )
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def clean(self) -> None:
        from django.core.validators import validate_email

        if self.kind == self.Kind.WEBHOOK:
            try:
                URLValidator(schemes=["http", "https"])(self.target)
            except ValidationError:
                raise ValidationError({"target": "a webhook needs an http(s) URL"}) from None
            try:
                check_outbound(self.target)
            except ValidationError as exc:
                raise ValidationError({"target": exc.messages}) from None
        else:
            addresses = parse_addresses(self.target)
            if not addresses:
                raise ValidationError({"target": "give at least one e-mail address"})
            for address in addresses:
                try:
                    validate_email(address)
                except ValidationError:
                    raise ValidationError({"target": f"not an e-mail address: {address!r}"}) from None

    @property
    def recipients(self) -> list[str]:
        return parse_addresses(self.target)

    def covers(self, module_id: int | None) -> bool:
        """Whether this channel wants changes of that module (uses prefetched modules if present).
        Every channel wants the portal's own (module None): a stalled scheduler stops its modules' news too."""
        ids = {m.id for m in self.modules.all()}
        return module_id is None or not ids or module_id in ids


class Delivery(models.Model):
    """One state change on its way to one channel, with its retry bookkeeping.

    pending: waiting for next_attempt_at; sent; failed (gave up after MAX_ATTEMPTS);
    muted (the module was inside a maintenance window when it changed: never sent).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"
        MUTED = "muted", "muted (maintenance window)"

    MAX_ATTEMPTS = 6
    FIRST_RETRY = timedelta(seconds=30)
    MAX_RETRY = timedelta(hours=1)
    # finished deliveries (sent, failed, muted) older than this are pruned
    RETENTION = timedelta(days=90)

    state_change = models.ForeignKey(StateChange, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=7, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="pending only: not before this")
    last_error = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            # one delivery per (change, channel): a second claim can never double a notification
            models.UniqueConstraint(fields=["state_change", "channel"], name="delivery_unique_change_channel"),
        ]
        indexes = [
            # notify.send_due: pending rows whose next_attempt_at has come, oldest first
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
            # Delivery.prune: finished rows by age
            models.Index(fields=["created"], name="delivery_created"),
        ]

    def __str__(self) -> str:
        return f"change {self.state_change_id} → {self.channel_id}: {self.status}"

    @classmethod
    def backoff(cls, attempts: int) -> timedelta:
        """Wait after the n-th failed attempt: 30 s, 60 s, 120 s ... capped at an hour."""
        return min(cls.FIRST_RETRY * 2 ** max(0, attempts - 1), cls.MAX_RETRY)

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        now = now or timezone.now()
        finished = cls.objects.exclude(status=cls.Status.PENDING).filter(created__lt=now - cls.RETENTION)
        return prune_in_chunks(finished)


class MaintenanceWindow(models.Model):
    """A span of time in which the listed modules are expected to misbehave (power opens these).

    A window covers exactly the modules listed (none listed = none covered): starts_at <= t < ends_at,
    and not after it was closed (closed_at). Notifications for a change inside a window are stored as
    muted and not sent. A power window (opened through apps.power, which starts its modules that are not
    running) has a mode: "ttl" = what it started is stopped when it is closed or expires; "hold" = what it
    started keeps running when it ends.
    """

    class Source(models.TextChoices):
        ADMIN = "admin", "maintenance (admin)"
        POWER = "power", "power window"

    class Mode(models.TextChoices):
        TTL = "ttl", "ttl: stop the services at expiry"
        HOLD = "hold", "hold: leave the services as they are"

    modules = models.ManyToManyField(Module, related_name="maintenance_windows")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    source = models.CharField(max_length=5, choices=Source.choices, default=Source.ADMIN)
    mode = models.CharField(max_length=4, choices=Mode.choices, blank=True, help_text="power windows only")
    closed_at = models.DateTimeField(
        null=True, blank=True, help_text="closed early (or by the expiry checker); no longer covers after this"
    )
    expired_handled_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="when the power checker claimed this window at its expiry"
    )

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")), name="window_ends_after_start"
            )
        ]
        indexes = [
            # covering(): windows that have not ended by the moment asked about
            models.Index(fields=["ends_at", "starts_at"], name="window_time"),
            # power: the open power window (one at most) and the expiry checker's scan
            models.Index(fields=["source", "closed_at", "ends_at"], name="window_power_open"),
        ]

    def __str__(self) -> str:
        return f"{self.starts_at:%Y-%m-%d %H:%M}–{self.ends_at:%Y-%m-%d %H:%M} {self.reason}".strip()

    def clean(self) -> None:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "a window must end after it starts"})

    @classmethod
    def active_at(cls, at: datetime) -> models.QuerySet:
        not_closed = models.Q(closed_at__isnull=True) | models.Q(closed_at__gt=at)
        return cls.objects.filter(not_closed, starts_at__lte=at, ends_at__gt=at)

    def is_active(self, at: datetime | None = None) -> bool:
        at = at or timezone.now()
        return self.starts_at <= at < self.ends_at and (self.closed_at is None or self.closed_at > at)

    @classmethod
    def open_power_window(cls, at: datetime | None = None) -> MaintenanceWindow | None:
        """The power window open now (power allows one at a time), or None."""
        at = at or timezone.now()
        return cls.active_at(at).filter(source=cls.Source.POWER).first()

    @classmethod
    def covering(cls, module: Module | int, at: datetime) -> models.QuerySet:
        """The windows that hold `module` at moment `at` (empty queryset = not in a window)."""
        module_id = module if isinstance(module, int) else module.pk
        return cls.active_at(at).filter(modules__id=module_id)

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        """Windows that ended more than VX11_WINDOW_RETENTION_DAYS ago (their power stop rows go with them)."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.VX11_WINDOW_RETENTION_DAYS)
        return prune_in_chunks(cls.objects.filter(ends_at__lt=cutoff))

    @classmethod
    def module_in_window(cls, module: Module | int | None, at: datetime) -> bool:
        """None (the portal itself) is never in a window: no window mutes a stalled scheduler."""
        return module is not None and cls.covering(module, at).exists()


class SchedulerWatch(models.Model):
    """One row: whether the portal's scheduler (beat and the worker's probe rounds) is stalled, as the
    watchdog (apps.fleet.watchdog) last saw it. Conditional UPDATEs flip it, so each stall and each
    recovery becomes one StateChange however many web processes watch."""

    stalled_since = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = "scheduler watch"

    def __str__(self) -> str:
        if not self.stalled_since:
            return "running"
        return f"stalled since {self.stalled_since:%Y-%m-%d %H:%M:%S}: {self.reason}"

    @classmethod
    def observe(cls, problem: str, now: datetime) -> StateChange | None:
        """Record what the watchdog sees ("" = all well). Returns the portal StateChange this call made
        (a new stall, or the end of one), None when nothing changed or another process got there first."""
        watch, _ = cls.objects.get_or_create(pk=1)
        rows = cls.objects.filter(pk=1)
        if bool(problem) == (watch.stalled_since is not None):
            return None  # the usual case, read-only: no transaction, no write lock
        with transaction.atomic():
            if problem:
                if rows.filter(stalled_since__isnull=True).update(stalled_since=now, reason=problem[:500]) != 1:
                    return None
                change = StateChange(
                    at=now,
                    from_state=State.UP,
                    to_state=State.DOWN,
                    reason=f"portal: scheduler stalled: {problem}"[:500],
                )
            else:
                if rows.filter(stalled_since=watch.stalled_since).update(stalled_since=None, reason="") != 1:
                    return None
                lasted = round((now - watch.stalled_since).total_seconds())
                change = StateChange(
                    at=now,
                    from_state=State.DOWN,
                    to_state=State.UP,
                    reason=f"portal: scheduler recovered after {lasted} s (was: {watch.reason})"[:500],
                )
            change.save()
            transaction.on_commit(change.announce)
        return change


__all__ += ["NotificationChannel", "Delivery", "MaintenanceWindow", "SchedulerWatch", "PORTAL"]
