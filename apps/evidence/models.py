"""The index of evidence bags: one `Evidence` row per BagIt bag under VX11_EVIDENCE_ROOT.

The bag on disk is the evidence; the row remembers what it looked like when it was written (its Payload-Oxum
and a sha256 over its manifests), so a bag re-made from scratch after an edit, which bagit alone would call
valid, is still caught. The rule for tampering: once a check finds a bag modified, missing a file or holding
an extra one, the row stays flagged. Later checks record their result in `last_result` and `verified_at` but
never turn a flagged row back to valid; only `reseal()`, by a user holding `evidence.reseal_evidence`, does,
and it records who, when, why and what was found before.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.events.models import publish


class Evidence(models.Model):
    UNVERIFIED = "unverified"
    VALID = "valid"
    MODIFIED = "modified"
    MISSING = "missing"
    EXTRA = "extra"
    NOT_A_BAG = "not_a_bag"
    STATES = [
        (UNVERIFIED, "unverified"),
        (VALID, "valid"),
        (MODIFIED, "modified"),
        (MISSING, "missing"),
        (EXTRA, "extra"),
        (NOT_A_BAG, "not a bag"),
    ]
    # a check that finds one of these flags the bag until an operator re-seals it
    FLAGGED = (MODIFIED, MISSING, EXTRA, NOT_A_BAG)

    path = models.CharField(max_length=500, unique=True, help_text="the bag folder, relative to VX11_EVIDENCE_ROOT")
    kind = models.CharField(max_length=60, help_text="what wrote it: power, audit, housekeeping, ...")
    run_id = models.CharField(max_length=120, blank=True)
    payload_oxum = models.CharField(max_length=60, help_text="bytes.files of the payload when the bag was made")
    manifest_sha256 = models.CharField(max_length=64, help_text="sha256 of manifest-sha256.txt when made")
    tagmanifest_sha256 = models.CharField(max_length=64, help_text="sha256 of tagmanifest-sha256.txt when made")
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=12, choices=STATES, default=UNVERIFIED)
    last_result = models.CharField(
        max_length=12, choices=STATES, blank=True, help_text="what the latest check found (a flagged state stays)"
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    detail = models.TextField(blank=True)
    findings = models.JSONField(default=list, blank=True, help_text="[{file, problem}] of the check that flagged it")
    resealed_by = models.CharField(max_length=150, blank=True)
    resealed_at = models.DateTimeField(null=True, blank=True)
    reseal_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "evidence"
        permissions = [
            ("verify_evidence", "Can re-hash evidence bags"),
            ("reseal_evidence", "Can re-seal a flagged evidence bag"),
        ]
        indexes = [
            # the daily check: recent bags, newest first; rotation: old bags by age
            models.Index(fields=["created_at"], name="evidence_created_idx"),
            # the admin's filter and the list of flagged bags
            models.Index(fields=["state"], name="evidence_state_idx"),
        ]

    def __str__(self) -> str:
        return self.path

    @classmethod
    def recent_or_flagged(cls, since: datetime) -> models.QuerySet[Evidence]:
        return cls.objects.filter(models.Q(created_at__gte=since) | models.Q(state__in=cls.FLAGGED))

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def flagged(self) -> bool:
        return self.state in self.FLAGGED

    def folder(self) -> Path:
        """The bag folder: `path` is relative to VX11_EVIDENCE_ROOT (absolute only for a bag written elsewhere)."""
        return Path(settings.VX11_EVIDENCE_ROOT).resolve() / self.path

    def verify(self, *, now: datetime | None = None) -> dict:
        """Re-hash the bag; store the result under the sticky rule (see the module docstring)."""
        from .bags import verify_indexed  # bags imports this module

        result = verify_indexed(self)
        before = self.state
        self.last_result = result["state"]
        self.verified_at = now or timezone.now()
        if result["state"] in self.FLAGGED:
            self.state = result["state"]
            self.findings = result["files"]
            self.detail = result["detail"]
        elif not self.flagged:
            self.state = result["state"]
            self.detail = result["detail"]
        self.save(update_fields=["state", "last_result", "verified_at", "findings", "detail"])
        if self.state != before and self.flagged:
            self.announce(before)
        return result

    def announce(self, before: str) -> None:
        """A bag just turned flagged: tell the admin and the operator console (status_changed)."""
        data = {"source": "evidence", "evidence": self.path, "from": before, "to": self.state, "files": self.findings}
        publish("status_changed", data)

    def reseal(self, user, note: str, *, now: datetime | None = None) -> dict:
        """Accept the bag as it is now: rewrite its manifests over the current files (bagit's Bag.save), index
        the new hashes, and clear the flag. The findings it replaces stay in the detail."""
        from .bags import reseal_bag

        now = now or timezone.now()
        before = f"{self.state}: {self.detail}" if self.flagged else self.state
        sealed = reseal_bag(self.folder())
        self.payload_oxum = sealed["payload_oxum"]
        self.manifest_sha256 = sealed["manifest_sha256"]
        self.tagmanifest_sha256 = sealed["tagmanifest_sha256"]
        self.state = self.VALID
        self.last_result = self.VALID
        self.verified_at = now
        self.findings = []
        self.resealed_by = user.get_username()
        self.resealed_at = now
        self.reseal_note = note
        self.detail = f"re-sealed by {self.resealed_by} at {now.isoformat()} ({note}); before: {before}"
        self.save()
        return {"state": self.state, "files": [], "detail": self.detail}

    def as_dict(self) -> dict:
        return {
            "id": self.pk,
            "path": self.path,
            "name": self.name,
            "kind": self.kind,
            "run_id": self.run_id,
            "payload_oxum": self.payload_oxum,
            "manifest_sha256": self.manifest_sha256,
            "created_at": self.created_at,
            "state": self.state,
            "last_result": self.last_result,
            "verified_at": self.verified_at,
            "detail": self.detail,
            "findings": self.findings,
            "resealed_by": self.resealed_by,
            "resealed_at": self.resealed_at,
        }
