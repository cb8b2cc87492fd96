"""Rotation of evidence bags: a bag older than VX11_EVIDENCE_ARCHIVE_DAYS moves from docs/audit/ into
docs/audit/archive/, and one older than VX11_EVIDENCE_DELETE_DAYS is deleted with its row. Nothing with a
`forensic` folder in its path is ever moved or deleted: forensic evidence leaves only by hand.

Rotation works from the index (Evidence.created_at, the bag's UTC time), never from guessing at folder names,
and touches only a real folder (no symlink) right under docs/audit/ or docs/audit/archive/ of the root.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from .bags import ARCHIVE, FORENSIC, audit_dir, relative_path
from .models import Evidence
from .signals import bag_moved

log = logging.getLogger(__name__)


def is_forensic(row: Evidence) -> bool:
    return any(FORENSIC in part.lower() for part in Path(row.path).parts)


def _rotatable(folder: Path, audit: Path) -> str:
    """Why the folder may not be moved or deleted, or "" when it may."""
    if folder.is_symlink():
        return "a symlink"
    if (
        folder.parent.resolve() not in (audit, audit / ARCHIVE)
        or folder.resolve() != folder.parent.resolve() / folder.name
    ):
        return f"not a bag folder right under {audit} or its {ARCHIVE}/"
    return ""


def _free_name(archive: Path, name: str) -> Path:
    for n in range(1, 1000):
        target = archive / (name if n == 1 else f"{name}_{n}")
        if not target.exists():
            return target
    raise FileExistsError(f"too many archived bags named {name}")


def rotate(now: datetime | None = None) -> dict:
    """Archive, then delete, by age. Returns the paths {archived, deleted, skipped: [{path, why}]}."""
    now = now or timezone.now()
    audit = audit_dir()
    archive = audit / ARCHIVE
    delete_before = now - timedelta(days=settings.VX11_EVIDENCE_DELETE_DAYS)
    archive_before = now - timedelta(days=settings.VX11_EVIDENCE_ARCHIVE_DAYS)
    report: dict[str, list] = {"archived": [], "deleted": [], "skipped": []}

    for row in Evidence.objects.filter(created_at__lt=archive_before).order_by("created_at", "id"):
        folder = row.folder()
        if is_forensic(row):
            report["skipped"].append({"path": row.path, "why": "forensic evidence is never rotated"})
            continue
        why = _rotatable(folder, audit) if folder.exists() or folder.is_symlink() else ""
        if why:
            report["skipped"].append({"path": row.path, "why": why})
            continue
        if row.created_at < delete_before:
            shutil.rmtree(folder, ignore_errors=True)  # rmtree never follows a symlink inside the bag
            if folder.exists():
                report["skipped"].append({"path": row.path, "why": "could not be deleted"})
                continue
            Evidence.objects.filter(pk=row.pk).delete()
            bag_moved.send(sender=Evidence, old=str(folder), new="")
            report["deleted"].append(row.path)
        elif folder.parent.resolve() == audit and folder.is_dir():
            archive.mkdir(exist_ok=True)
            target = _free_name(archive, folder.name)
            try:
                folder.rename(target)
            except OSError as exc:  # another rotation took it first, or the disk refused
                report["skipped"].append({"path": row.path, "why": f"could not be moved: {exc}"})
                continue
            new_path = relative_path(target)
            Evidence.objects.filter(pk=row.pk).update(path=new_path)
            bag_moved.send(sender=Evidence, old=str(folder), new=str(target))
            report["archived"].append(new_path)
    if report["archived"] or report["deleted"]:
        log.info("evidence: archived %d bags, deleted %d", len(report["archived"]), len(report["deleted"]))
    return report
