"""Audits of the fleet's database (integrity checks, counts, the DB map), its file tree and its git state.

An `AuditRun` is one audit, whoever started it (CLI, API, admin, the nightly beat entry): what it checked,
its outcome, what it found (`Finding` rows), the map of the database it read (`MapTable` rows, one per table)
and where its evidence bag is. `OwnershipRule` says which module owns which tables of the database; the DB
map reads them (apps.audits.dbmap). The work itself is in apps.audits.runner.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from apps.events.models import publish
from vx11_site.db import prune_in_chunks

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^[^\s*]+\*?$")  # a table name, or a prefix ending in one *


class AuditRun(models.Model):
    """One audit: its kind, status and progress, who started it, its result and its evidence."""

    class Kind(models.TextChoices):
        DB = "db", "db: integrity checks, counts, file stats"
        MAP = "map", "map: the checks plus the DB map files"
        FS = "fs", "fs: the managed tree"
        GIT = "git", "git: the managed checkout"
        ALL = "all", "all of them"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        OK = "ok", "ok"
        FINDINGS = "findings", "findings"
        ERROR = "error", "error"

    UNFINISHED = (Status.QUEUED, Status.RUNNING)
    EXIT_CODES = {Status.OK: 0, Status.FINDINGS: 1, Status.ERROR: 2}

    kind = models.CharField(max_length=8, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    approx = models.BooleanField(default=False, help_text="row counts estimated (sqlite_stat1, max(rowid), reltuples)")
    target = models.CharField(max_length=500, blank=True, help_text="the database audited (a URL without password)")
    trigger = models.CharField(max_length=16, help_text="cli, api, admin, beat")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    progress = models.FloatField(default=0, help_text="0-100")
    step = models.CharField(max_length=300, blank=True, help_text="what it is doing now (or did last)")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    diff = models.JSONField(
        default=dict, blank=True, help_text="against the previous map of the same target: added, dropped, owner changed"
    )
    error = models.TextField(blank=True)
    evidence_path = models.CharField(max_length=500, blank=True, help_text="the run's evidence bag")

    class Meta:
        ordering = ["-id"]
        permissions = [("run_audit", "Can run an audit (API, admin, CLI)")]
        indexes = [
            # prune by age: AuditRun.prune(); stale unfinished runs: AuditRun.sweep_stale()
            models.Index(fields=["created_at"], name="auditrun_time"),
            # the previous map of a target: dbmap.previous_map()
            models.Index(fields=["target", "-id"], name="auditrun_target"),
        ]

    def __str__(self) -> str:
        return f"audit {self.kind} #{self.id} {self.status}"

    @property
    def api_url(self) -> str:
        return f"/api/audits/{self.id}"

    @property
    def finished(self) -> bool:
        return self.status not in self.UNFINISHED

    @property
    def exit_code(self) -> int | None:
        return self.EXIT_CODES.get(self.status)

    @property
    def has_map(self) -> bool:
        return self.kind in (self.Kind.MAP, self.Kind.ALL)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None

    @classmethod
    def queue(cls, kind: str, approx: bool = False, trigger: str = "api", user=None) -> AuditRun:
        """Store a queued run and hand it to a Celery worker after the commit; callers poll the row. A broker
        that refuses it fails the run at once (status error), so nobody waits for it."""
        from .tasks import run_audit

        run = cls.objects.create(kind=kind, approx=approx, trigger=trigger, actor=cls._user(user))

        def send():
            try:
                run_audit.delay(run.id)
            except Exception as exc:
                log.warning("audit run %s could not be queued: %s", run.id, exc)
                run.fail(f"could not be queued: the Celery broker is unreachable ({exc})")

        transaction.on_commit(send)
        return run

    @staticmethod
    def _user(user):
        return user if getattr(user, "pk", None) else None

    def claim(self, now=None) -> bool:
        """queued -> running, for one worker only (a conditional UPDATE); False if it was not queued."""
        now = now or timezone.now()
        claimed = AuditRun.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.RUNNING, started_at=now
        )
        if claimed:
            self.status, self.started_at = self.Status.RUNNING, now
            self.announce(self.Status.QUEUED)
        return bool(claimed)

    def fail(self, message: str, now=None) -> None:
        """End the run as an error (the audit could not run); an ended run is left as it is."""
        previous = self.status
        now = now or timezone.now()
        updated = AuditRun.objects.filter(pk=self.pk, status__in=self.UNFINISHED).update(
            status=self.Status.ERROR, ended_at=now, error=message[:5000]
        )
        if updated:
            self.status, self.ended_at, self.error = self.Status.ERROR, now, message[:5000]
            self.announce(previous)

    def announce(self, previous: str) -> None:
        publish(
            "status_changed",
            {
                "audit_run": self.id,
                "kind": self.kind,
                "from": previous,
                "to": self.status,
                "progress": self.progress,
                "at": timezone.now().isoformat(),
            },
        )

    def report_progress(self, done: int, total: int, step: str) -> None:
        """Store and announce how far it is (plan_updated): done of total steps, the current one."""
        self.progress = round(100.0 * done / total, 1) if total else 0.0
        self.step = step[:300]
        AuditRun.objects.filter(pk=self.pk).update(progress=self.progress, step=self.step)
        publish(
            "plan_updated",
            {
                "audit_run": self.id,
                "kind": self.kind,
                "done": done,
                "total": total,
                "step": self.step,
                "progress": self.progress,
            },
        )

    def as_json(self) -> dict:
        """The whole run: what `vx11 audit --json` prints; the checks named by their PRAGMA."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "exit_code": self.exit_code,
            "target": self.target,
            "approx": self.approx,
            "trigger": self.trigger,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            **self.result,
            "findings": [finding.as_dict() for finding in self.findings.all()],
            "diff": self.diff,
            "evidence": self.evidence_path,
            "error": self.error,
        }

    def summary(self) -> dict:
        return {
            "run_id": self.id,
            "kind": self.kind,
            "status": self.status,
            "target": self.target,
            "findings": self.findings.exclude(severity=Finding.Severity.INFO).count(),
            "evidence": self.evidence_path,
        }

    @classmethod
    def sweep_stale(cls, now=None, older_than: timedelta = timedelta(hours=6)) -> int:
        """Runs left queued or running this long (a worker died) end as errors."""
        now = now or timezone.now()
        stale = list(cls.objects.filter(status__in=cls.UNFINISHED, created_at__lt=now - older_than))
        for run in stale:
            run.fail(f"interrupted: still {run.status} after {older_than}", now=now)
        return len(stale)

    @classmethod
    def prune(cls, now=None) -> int:
        """Delete runs (and their findings and map rows) older than VX11_AUDIT_RETENTION_DAYS; bags stay."""
        now = now or timezone.now()
        cutoff = now - timedelta(days=settings.VX11_AUDIT_RETENTION_DAYS)
        old = cls.objects.filter(created_at__lt=cutoff)
        deleted = prune_in_chunks(Finding.objects.filter(run__in=old))
        deleted += prune_in_chunks(MapTable.objects.filter(run__in=old))
        return deleted + prune_in_chunks(old)


class Finding(models.Model):
    """Something an audit found: a failed or skipped check, a bad target, a table it could not count, ..."""

    class Severity(models.TextChoices):
        ERROR = "error", "error"  # the target is damaged or could not be audited
        WARNING = "warning", "warning"  # worth a look: unowned tables, a check out of time, NOT VALID keys
        INFO = "info", "info"  # recorded, not a problem (does not make the run "findings")

    run = models.ForeignKey(AuditRun, on_delete=models.CASCADE, related_name="findings")
    check_name = models.CharField(
        max_length=40,
        help_text="target, quick_check, integrity_check, foreign_key_check, counts, amcheck, map, fs, git",
    )
    severity = models.CharField(max_length=8, choices=Severity.choices)
    table = models.CharField(max_length=255, blank=True)
    message = models.CharField(max_length=1000)
    count = models.BigIntegerField(null=True, blank=True, help_text="how many (rows, lines, files), when counted")
    lines = models.JSONField(default=list, blank=True, help_text="the checker's own messages, the first 100")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.check_name}: {self.message}"

    def as_dict(self) -> dict:
        return {
            "check": self.check_name,
            "severity": self.severity,
            "table": self.table,
            "message": self.message,
            "count": self.count,
            "lines": self.lines,
        }


class MapTable(models.Model):
    """One table of the DB map a run made: what DB_SCHEMA_v7_FINAL.json says of it, as a row to sort and filter."""

    class Status(models.TextChoices):
        EMPTY = "EMPTY (READY)", "EMPTY (READY)"
        ACTIVE = "ACTIVE", "ACTIVE"
        LEGACY = "LEGACY - preserved", "LEGACY - preserved"

    run = models.ForeignKey(AuditRun, on_delete=models.CASCADE, related_name="map_tables")
    name = models.CharField(max_length=255)
    rows = models.BigIntegerField(null=True, blank=True, help_text="empty: not counted (see the run's findings)")
    rows_approx = models.BooleanField(default=False, help_text="an estimate, not COUNT(*)")
    status = models.CharField(max_length=20, choices=Status.choices)
    module = models.CharField(max_length=64, blank=True, help_text="the owning module's slug; empty: unowned")
    owner_source = models.CharField(max_length=200, blank=True, help_text="which rule placed it")
    columns = models.JSONField(default=list)
    foreign_keys = models.JSONField(default=list)
    indexes = models.JSONField(default=list)

    class Meta:
        ordering = ["name"]
        verbose_name = "DB map table"
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="maptable_run_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def owned(self) -> bool:
        return bool(self.module)


class OwnershipRule(models.Model):
    """`pattern` (an exact table name, or a prefix ending in *) belongs to `module`. An exact name wins over a
    prefix, and a longer prefix over a shorter one: `canonical_runs` (manifestator) before `canonical_*` (madre)."""

    module = models.ForeignKey("fleet.Module", on_delete=models.CASCADE, related_name="ownership_rules")
    pattern = models.CharField(
        max_length=255, unique=True, help_text="a table name (events) or a prefix ending in * (daughter_*)"
    )
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pattern"]

    def __str__(self) -> str:
        return f"{self.pattern} -> {self.module_id and self.module.slug}"

    def clean(self):
        if not PATTERN.match(self.pattern or ""):
            raise ValidationError({"pattern": "a table name, or a prefix ending in one * (no spaces)"})

    @property
    def is_prefix(self) -> bool:
        return self.pattern.endswith("*")

    def matches(self, table: str) -> bool:
        return table.startswith(self.pattern[:-1]) if self.is_prefix else table == self.pattern
