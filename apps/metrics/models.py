"""The scorecard: every percentage computed from stored evidence, kept with its history.

A `Scorecard` is one computation (apps.metrics.snapshot.take_snapshot): its verdict, the decision logic behind
it, its evidence bag and the hashes of the two files it wrote. Each metric of it is a `MetricSnapshot` row that
keeps the numbers it was computed from (`inputs`), so `verify_snapshot` can recompute it. A `TestRun` is a
stored summary of a test run (an uploaded JUnit XML or pytest JSON report, or the pipeline's runner phase);
`tests_p0_pct` and `Automatizacion_pct` read them.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from vx11_site.db import prune_in_chunks


class Scorecard(models.Model):
    """One computation of every metric: the verdict, its decision logic and where its evidence is."""

    class Verdict(models.TextChoices):
        OPERATIONAL = "OPERATIONAL", "OPERATIONAL"
        DEGRADED = "DEGRADED", "DEGRADED"
        CRITICAL = "CRITICAL", "CRITICAL"

    generated_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=150, blank=True, help_text="who asked: a user name, beat, cli")
    verdict = models.CharField(max_length=12, choices=Verdict.choices)
    decision_logic = models.JSONField(default=dict, blank=True)
    evidence_path = models.CharField(
        max_length=500, blank=True, help_text="the bag folder, relative to the evidence root"
    )
    percentages_sha256 = models.CharField(max_length=64, blank=True)
    scorecard_sha256 = models.CharField(max_length=64, blank=True)
    coverage = models.JSONField(default=dict, blank=True, help_text="evidence coverage: overall, strict, counts")

    class Meta:
        ordering = ["-generated_at", "-id"]
        # the latest scorecard, the trend window and the prune by age
        indexes = [models.Index(fields=["generated_at"], name="metrics_sc_generated")]

    def __str__(self) -> str:
        return f"scorecard {self.pk} {self.verdict} at {self.generated_at:%Y-%m-%d %H:%M:%S}Z"

    @property
    def complete(self) -> bool:
        """Every metric has evidence behind it (none NV or deferred)."""
        return bool(self.coverage.get("complete"))

    @classmethod
    def latest(cls) -> Scorecard | None:
        return cls.objects.order_by("-generated_at", "-id").first()

    @classmethod
    def trend(cls, name: str, days: int = 30, now=None) -> list[tuple]:
        """(generated_at, value, status) of one metric over the last `days` days, oldest first."""
        now = now or timezone.now()
        rows = (
            MetricSnapshot.objects.filter(name=name, scorecard__generated_at__gte=now - timedelta(days=days))
            .filter(scorecard__generated_at__lte=now)
            .order_by("scorecard__generated_at", "scorecard_id")
            .values_list("scorecard__generated_at", "value", "status")
        )
        return list(rows)

    @classmethod
    def prune(cls, now=None) -> int:
        """Delete scorecards older than VX11_METRICS_RETENTION_DAYS, the latest kept; returns the rows deleted (their
        metric rows included)."""
        now = now or timezone.now()
        cutoff = now - timedelta(days=settings.VX11_METRICS_RETENTION_DAYS)
        latest = cls.latest()
        old = cls.objects.filter(generated_at__lt=cutoff)
        if latest is not None:
            old = old.exclude(pk=latest.pk)
        # the metric rows go with their scorecard (CASCADE)
        return prune_in_chunks(old)


class MetricSnapshot(models.Model):
    """One metric of one scorecard: its value (null when NV or deferred), why, and what it was computed from."""

    class Status(models.TextChoices):
        OK = "ok", "ok"
        FAIL = "fail", "fail"
        NV = "NV", "NV (no evidence)"
        DEFERRED = "deferred", "deferred"

    scorecard = models.ForeignKey(Scorecard, on_delete=models.CASCADE, related_name="metrics")
    name = models.CharField(max_length=64)
    value = models.FloatField(null=True, blank=True, help_text="0-100; empty when NV or deferred")
    status = models.CharField(max_length=8, choices=Status.choices)
    source = models.CharField(max_length=200, blank=True)
    evidence_path = models.CharField(max_length=500, blank=True)
    calculation = models.TextField(blank=True)
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    inputs = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["scorecard_id", "id"]
        # one metric's history (Scorecard.trend) and one scorecard's metric by name
        indexes = [models.Index(fields=["name", "scorecard"], name="metrics_ms_name_sc")]

    def __str__(self) -> str:
        shown = "NV" if self.value is None else f"{self.value:g}"
        return f"{self.name} = {shown} ({self.status})"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "value": self.value,
            "status": self.status,
            "source": self.source,
            "evidence_path": self.evidence_path,
            "calculation": self.calculation,
            "reason": self.reason,
            "details": self.details,
            "inputs": self.inputs,
        }


class TestRun(models.Model):
    """A stored test-run summary: what `tests_p0_pct` and `Automatizacion_pct` are computed from."""

    __test__ = False  # not a pytest test class despite the name

    class Kind(models.TextChoices):
        UNIT = "unit", "unit"
        INTEGRATION = "integration", "integration"

    class Source(models.TextChoices):
        JUNIT = "junit", "JUnit XML"
        PYTEST_JSON = "pytest-json", "pytest JSON report"
        PIPELINE = "pipeline", "pipeline runner phase"

    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.UNIT)
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=12, choices=Source.choices)
    evidence = models.CharField(max_length=500, blank=True, help_text="the report's file or bag, if kept")

    class Meta:
        ordering = ["-created_at", "-id"]
        # the latest run of a kind
        indexes = [models.Index(fields=["kind", "created_at"], name="metrics_tr_kind_created")]

    def __str__(self) -> str:
        return f"{self.kind} test run {self.pk}: {self.passed} passed, {self.failed} failed"

    @property
    def succeeded(self) -> bool:
        """Passed: at least one test passed and none failed or errored."""
        return self.passed > 0 and self.failed == 0 and self.errors == 0

    def as_dict(self) -> dict:
        return {
            "id": self.pk,
            "kind": self.kind,
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "skipped": self.skipped,
            "created_at": self.created_at.isoformat(),
            "source": self.source,
            "evidence": self.evidence,
        }
