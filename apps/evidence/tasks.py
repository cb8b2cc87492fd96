"""Celery entry points for evidence; thin on purpose."""

from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from .models import Evidence
from .rotation import rotate


@shared_task(name="apps.evidence.tasks.verify_recent_evidence", soft_time_limit=1800)
def verify_recent_evidence(now: datetime | None = None) -> dict:
    """Daily: re-hash every bag written in the last VX11_EVIDENCE_ARCHIVE_DAYS (the ones not archived yet) and
    every bag already flagged; the states it finds stay on the rows."""
    now = now or timezone.now()
    since = now - timedelta(days=settings.VX11_EVIDENCE_ARCHIVE_DAYS + 1)
    counts: dict[str, int] = {}
    for row in Evidence.recent_or_flagged(since).iterator():
        state = row.verify(now=now)["state"]
        counts[state] = counts.get(state, 0) + 1
    return counts


@shared_task(name="apps.evidence.tasks.rotate_evidence", soft_time_limit=1800)
def rotate_evidence(now: datetime | None = None) -> dict:
    """Daily: archive bags older than VX11_EVIDENCE_ARCHIVE_DAYS, delete those older than
    VX11_EVIDENCE_DELETE_DAYS, never forensic ones."""
    report = rotate(now=now)
    return {key: len(value) for key, value in report.items()}
