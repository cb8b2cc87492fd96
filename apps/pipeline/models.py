"""The autonomy pipeline: one run of seven phases (audit, cleanup, runner, madre guardrails, operator check,
metrics, mirror), each done by the app that owns the work, chained on Celery and recorded here.

A `PipelineRun` is one run: who or what started it, its status and verdict, the human actions counted while it
ran, its evidence bag and its mirror commit. A `PhaseRun` is one phase of it. `PipelineSlot` is a single row that
a run holds from its start to its end: claiming it is a conditional UPDATE, so two starts at once (two workers,
two API requests) leave exactly one run. The work is in apps.pipeline.runner and apps.pipeline.phases.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from apps.events.models import publish
from vx11_site.db import prune_in_chunks

ALL_PHASES = (1, 2, 3, 4, 5, 6, 7)


class Busy(Exception):
    """A run is already going: the API answers 409 with its URL."""

    def __init__(self, running: PipelineRun | None):
        self.running = running
        where = f"run #{running.id} ({running.api_url})" if running else "a run"
        super().__init__(f"{where} is going; one pipeline run at a time")


class PipelineRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        OK = "ok", "ok"
        FINDINGS = "findings", "findings"
        FAILED = "failed", "failed"
        INTERRUPTED = "interrupted", "interrupted"
        CANCELLED = "cancelled", "cancelled"

    UNFINISHED = (Status.QUEUED, Status.RUNNING)
    # `vx11 pipeline run`: 0 when the run is ok or has findings, 1 when it did not get through
    EXIT_CODES = {Status.OK: 0, Status.FINDINGS: 0, Status.FAILED: 1, Status.INTERRUPTED: 1, Status.CANCELLED: 1}

    trigger = models.CharField(max_length=16, help_text="beat, api, admin or cli")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=150, help_text="who started it (a user name, or beat)")
    phases = models.JSONField(default=list, help_text="the phase numbers asked for")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    verdict = models.CharField(max_length=12, blank=True, help_text="the scorecard's verdict; empty: NV (no snapshot)")
    scorecard = models.ForeignKey(
        "metrics.Scorecard", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="the last sign of life of its worker")
    cancel_requested = models.CharField(max_length=150, blank=True, help_text="who asked to cancel it")
    manual_interventions = models.PositiveIntegerField(
        default=0, help_text="human actions on the fleet while it ran (power, housekeeping, admin edits)"
    )
    interventions = models.JSONField(default=list, blank=True, help_text="[{at, kind, user, what}]")
    evidence_path = models.CharField(max_length=500, blank=True, help_text="the run's bag")
    mirror_commit = models.CharField(max_length=64, blank=True)
    mirror_pushed = models.BooleanField(
        default=False, help_text="the commit reached the remote (maybe a later run's push)"
    )
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("run_pipeline", "Can start or cancel an autonomy pipeline run")]

    def __str__(self) -> str:
        return f"pipeline run #{self.id} {self.status}"

    @property
    def api_url(self) -> str:
        return f"/api/pipeline/runs/{self.id}"

    @property
    def admin_url(self) -> str:
        return f"/admin/pipeline/pipelinerun/{self.id}/change/"

    @property
    def finished(self) -> bool:
        return self.status not in self.UNFINISHED

    @property
    def exit_code(self) -> int | None:
        return self.EXIT_CODES.get(self.status)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.ended_at:
            return round((self.ended_at - self.started_at).total_seconds(), 3)
        return None

    # --- one run at a time --------------------------------------------------------------------------

    @classmethod
    def running(cls) -> PipelineRun | None:
        slot = PipelineSlot.objects.select_related("run").filter(pk=1).first()
        return slot.run if slot else None

    @classmethod
    def start(cls, trigger: str, user=None, phases=ALL_PHASES, now: datetime | None = None) -> PipelineRun:
        """Store a queued run with its phases (those not asked for: skipped) holding the slot; Busy if it is held.
        A slot left held by a run that has ended (its worker died after the end) is taken back first."""
        now = now or timezone.now()
        asked = sorted(set(phases))
        with transaction.atomic():
            PipelineSlot.objects.get_or_create(pk=1)
            run = cls.objects.create(
                trigger=trigger,
                user=user if getattr(user, "pk", None) else None,
                actor=getattr(user, "username", "") or trigger,
                phases=asked,
                created_at=now,
            )
            PipelineSlot.objects.filter(
                pk=1, run__status__in=[s for s in cls.Status if s not in cls.UNFINISHED]
            ).update(run=None)
            if not PipelineSlot.objects.filter(pk=1, run__isnull=True).update(run=run, claimed_at=now):
                raise Busy(cls.running())  # rolls the new row back
            from .phases import PHASES

            PhaseRun.objects.bulk_create(
                [
                    PhaseRun(
                        run=run,
                        number=phase.number,
                        name=phase.name,
                        status=PhaseRun.Status.PENDING if phase.number in asked else PhaseRun.Status.SKIPPED,
                        summary="" if phase.number in asked else "not asked for",
                    )
                    for phase in PHASES
                ]
            )
        run.announce("")
        return run

    def release(self) -> None:
        PipelineSlot.objects.filter(pk=1, run=self).update(run=None)

    # --- state -----------------------------------------------------------------------------------------

    def beat(self, now: datetime | None = None) -> bool:
        """Mark the run alive; False once it has ended (or was swept), so a heartbeat thread stops."""
        return bool(
            PipelineRun.objects.filter(pk=self.pk, status__in=self.UNFINISHED).update(
                heartbeat_at=now or timezone.now()
            )
        )

    def mark_running(self, now: datetime) -> None:
        if PipelineRun.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.RUNNING, started_at=now, heartbeat_at=now
        ):
            self.status, self.started_at, self.heartbeat_at = self.Status.RUNNING, now, now
            self.announce(self.Status.QUEUED)

    def outcome(self) -> str:
        """What the phases add up to: failed if one failed, findings if one found something, else ok."""
        statuses = {p.status for p in self.phase_runs.all()}
        if PhaseRun.Status.FAILED in statuses:
            return self.Status.FAILED
        if PhaseRun.Status.FINDINGS in statuses:
            return self.Status.FINDINGS
        return self.Status.OK

    def end(self, status: str, now: datetime | None = None, error: str = "") -> bool:
        """End the run (once: a conditional UPDATE), free the slot, announce. False if it had already ended."""
        now = now or timezone.now()
        previous = self.status
        fields = {"status": status, "ended_at": now, "error": error[:5000]}
        if not PipelineRun.objects.filter(pk=self.pk, status__in=self.UNFINISHED).update(**fields):
            return False
        for key, value in fields.items():
            setattr(self, key, value)
        self.release()
        self.announce(previous)
        return True

    def announce(self, previous: str) -> None:
        publish(
            "status_changed",
            {
                "source": "pipeline",
                "pipeline_run": self.id,
                "from": previous,
                "to": self.status,
                "verdict": self.verdict,
                "at": timezone.now().isoformat(),
            },
        )

    def announce_plan(self) -> None:
        """plan_updated: every phase as it stands, for the run page's timeline and the CLI."""
        publish(
            "plan_updated",
            {"source": "pipeline", "pipeline_run": self.id, "status": self.status, "phases": self.phase_list()},
        )

    def phase_list(self) -> list[dict]:
        return [phase.as_dict() for phase in self.phase_runs.all()]

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "url": self.api_url,
            "status": self.status,
            "exit_code": self.exit_code,
            "verdict": self.verdict or "NV",
            "trigger": self.trigger,
            "actor": self.actor,
            "phases_asked": self.phases,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "manual_interventions": self.manual_interventions,
            "interventions": self.interventions,
            "evidence": self.evidence_path,
            "mirror": {"commit": self.mirror_commit, "pushed": self.mirror_pushed},
            "scorecard": self.scorecard_id,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "phases": self.phase_list(),
        }

    # --- Autonomia_pct ---------------------------------------------------------------------------------

    @classmethod
    def autonomy_record(cls) -> dict | None:
        """The latest run that has ended a phase, as apps.metrics reads it: phases that ran (not skipped) and
        those of them that got through (ok or findings) with no human action on the fleet while they ran. A run
        still going (its metrics phase asks) counts the phases ended so far."""
        ended = (PhaseRun.Status.OK, PhaseRun.Status.FINDINGS, PhaseRun.Status.FAILED)
        run = cls.objects.filter(phase_runs__status__in=ended).order_by("-id").first()
        if run is None:
            return None
        phases = [p for p in run.phase_runs.all() if p.status in ended]
        unattended = [p for p in phases if p.status != PhaseRun.Status.FAILED and p.interventions == 0]
        return {
            "run": run.id,
            "finished_at": run.ended_at or max(p.ended_at for p in phases),
            "phases_total": len(phases),
            "phases_unattended": len(unattended),
            "evidence_path": run.evidence_path,
        }

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        """Runs older than VX11_PIPELINE_RETENTION_DAYS (their bags rotate with the evidence); never the last."""
        now = now or timezone.now()
        old = cls.objects.filter(created_at__lt=now - timedelta(days=settings.VX11_PIPELINE_RETENTION_DAYS))
        latest = cls.objects.order_by("-id").values_list("id", flat=True).first()
        old = old.exclude(pk=latest).exclude(status__in=cls.UNFINISHED)

        def staged(ids: list[int]) -> None:  # what is left of their staging folders (the mirror phase's log)
            for pk in ids:
                shutil.rmtree(Path(settings.VX11_EVIDENCE_ROOT) / "pipeline" / str(pk), ignore_errors=True)

        return prune_in_chunks(PhaseRun.objects.filter(run__in=old)) + prune_in_chunks(old, before_delete=staged)


class PhaseRun(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        OK = "ok", "ok"
        FINDINGS = "findings", "findings"
        FAILED = "failed", "failed"
        SKIPPED = "skipped", "skipped"

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="phase_runs")
    number = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=24)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    progress = models.FloatField(default=0, help_text="0-100")
    step = models.CharField(max_length=300, blank=True, help_text="what it is doing now (or did last)")
    summary = models.TextField(blank=True)
    evidence = models.JSONField(default=list, blank=True, help_text="its files, relative to VX11_EVIDENCE_ROOT")
    details = models.JSONField(default=dict, blank=True)
    interventions = models.PositiveIntegerField(default=0, help_text="human actions on the fleet while it ran")

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["run", "number"], name="phaserun_run_number")]

    def __str__(self) -> str:
        return f"phase {self.number} {self.name}: {self.status}"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.ended_at:
            return round((self.ended_at - self.started_at).total_seconds(), 3)
        return None

    def claim(self, now: datetime) -> bool:
        """pending -> running, once (a redelivered task finds it taken)."""
        if PhaseRun.objects.filter(pk=self.pk, status=self.Status.PENDING).update(
            status=self.Status.RUNNING, started_at=now, progress=0
        ):
            self.status, self.started_at = self.Status.RUNNING, now
            return True
        return False

    def evidence_files(self) -> list[dict]:
        """Its files: the name of each within the phase's folder, where it is, its size (None: gone), its URL."""
        from .phases import BY_NUMBER

        folder = f"/{BY_NUMBER[self.number].folder}/"
        files = []
        for path in self.evidence:
            name = f"/{path}".split(folder, 1)[1] if folder in f"/{path}" else Path(path).name
            target = confined_file(path)
            files.append(
                {
                    "name": name,
                    "path": path,
                    "bytes": target.stat().st_size if target is not None else None,
                    "url": f"{self.run.api_url}/phases/{self.number}/evidence/{quote(name)}",
                }
            )
        return files

    def as_dict(self) -> dict:
        return {
            "number": self.number,
            "name": self.name,
            "status": self.status,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "progress": self.progress,
            "step": self.step,
            "summary": self.summary,
            "evidence": self.evidence,
            "interventions": self.interventions,
        }


class PipelineSlot(models.Model):
    """The one row (pk 1) a run holds while it is queued or running."""

    run = models.OneToOneField(PipelineRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    claimed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"pipeline slot: {'run #' + str(self.run_id) if self.run_id else 'free'}"


def confined_file(relative: str) -> Path | None:
    """VX11_EVIDENCE_ROOT/relative if it is a regular file inside the root once resolved; None otherwise."""
    root = Path(settings.VX11_EVIDENCE_ROOT).resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
