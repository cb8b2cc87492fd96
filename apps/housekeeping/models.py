"""HousekeepingRun: one housekeeping run (a dry run, an applied one, or a forensic archive copy) and what it did.

The filesystem work is in apps.housekeeping.runner (the run), guard (what may move) and attic (the moves, the
manifest, the restore); the row keeps who asked, when, what moved and where, what was refused or protected, the
attic stamp `vx11 restore` takes, and the evidence bag of the run.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.events.models import publish


class HousekeepingRun(models.Model):
    class Operation(models.TextChoices):
        HOUSEKEEPING = "housekeeping", "housekeeping (move into the attic)"
        ARCHIVE_FORENSIC = "archive_forensic", "archive forensic/ (copy)"

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        OK = "ok", "ok"
        REFUSED = "refused", "some paths refused"
        ABORTED = "aborted", "aborted: protected paths"
        ERROR = "error", "error"

    operation = models.CharField(max_length=20, choices=Operation.choices, default=Operation.HOUSEKEEPING)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=150, help_text="who asked (kept when the user is deleted)")
    via = models.CharField(max_length=10, help_text="cli, api or admin")
    applied = models.BooleanField(default=False, help_text="off: a dry run, nothing moved")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    root = models.CharField(max_length=500, help_text="the managed tree (VX11_ROOT) it ran on")
    attic_stamp = models.CharField(
        max_length=24, blank=True, db_index=True, help_text="attic/<stamp>/ holding the moves and MANIFEST.json"
    )
    excludes_source = models.CharField(max_length=500, blank=True, help_text="where the protected paths came from")
    moves = models.JSONField(
        default=list, blank=True, help_text="[{path, category, reason, stored, size, files}]: moved, or planned"
    )
    refused = models.JSONField(default=list, blank=True, help_text="[{path, reason}] the guards refused")
    protected = models.JSONField(
        default=list, blank=True, help_text="[{path, protected_by}]: candidates the excludes list protects"
    )
    bytes_moved = models.BigIntegerField(default=0)
    message = models.TextField(blank=True)
    evidence_path = models.CharField(max_length=500, blank=True, help_text="the run's evidence bag")
    restored_at = models.DateTimeField(null=True, blank=True)
    restored_by = models.CharField(max_length=150, blank=True)
    restore_result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        permissions = [
            ("apply_housekeeping", "Can apply housekeeping (move into the attic) and archive forensic/"),
            ("restore_housekeeping", "Can restore a housekeeping run from the attic"),
        ]

    def __str__(self) -> str:
        mode = "applied" if self.applied else "dry run"
        return f"{self.operation} #{self.pk} ({mode}, {self.status})"

    @property
    def exit_code(self) -> int:
        """The CLI's answer: 0 ok, 1 something refused or protected, 2 an error."""
        return {self.Status.OK: 0, self.Status.REFUSED: 1, self.Status.ABORTED: 1}.get(self.status, 2)

    @property
    def restorable(self) -> bool:
        return self.applied and bool(self.attic_stamp) and self.restored_at is None

    def announce(self, event: str = "status_changed") -> None:
        publish(event, self.summary())

    def summary(self) -> dict:
        return {
            "source": "housekeeping",
            "housekeeping_run": self.pk,
            "operation": self.operation,
            "status": self.status,
            "applied": self.applied,
            "moves": len(self.moves),
            "refused": len(self.refused),
            "protected": len(self.protected),
        }

    def finish(self, status: str, message: str) -> None:
        self.status = status
        self.message = message
        self.finished_at = timezone.now()
        self.save()
        self.announce()

    def as_dict(self) -> dict:
        return {
            "id": self.pk,
            "operation": self.operation,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "actor": self.actor,
            "via": self.via,
            "applied": self.applied,
            "status": self.status,
            "root": self.root,
            "attic_stamp": self.attic_stamp,
            "excludes_source": self.excludes_source,
            "moves": self.moves,
            "refused": self.refused,
            "protected": self.protected,
            "bytes_moved": self.bytes_moved,
            "message": self.message,
            "evidence_path": self.evidence_path,
            "restored_at": self.restored_at,
            "restored_by": self.restored_by,
            "restore_result": self.restore_result,
        }
