"""Evidence of power actions: one BagIt bag per audited request, docs/audit/madre_power_<action>_<svc>_<stamp>/
under VX11_EVIDENCE_ROOT (the folder name madre uses, so its readers still find it), written by
apps.evidence.bags.write_bag and indexed as an `Evidence` row of kind "power".

The bag's payload is madre's layout under data/: data/plan.json, data/result.json, data/output.log (plus the
portal's data/EVIDENCE_INDEX.md). PowerAction.evidence_path, madre's `out_dir`, is the bag folder.

Called by PowerAction.finish() and PowerAction.prune(); it imports no model at import time, so models.py can
import it. When evidence rotation archives or deletes a bag, `follow_bag` keeps evidence_path pointing at it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import bagit
from django.conf import settings
from django.dispatch import receiver

from apps.evidence.bags import ARCHIVE, STAMP, write_bag
from apps.evidence.signals import bag_moved

if TYPE_CHECKING:
    from .models import PowerAction

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
PREFIX = "madre_power_"


def evidence_name(action: str, service: str, at: datetime) -> str:
    """madre's folder name for an action: madre_power_<action>_<svc>_<YYYYmmddTHHMMSSZ> (a _n suffix is added
    by write_bag when the same second already has one)."""
    return f"{PREFIX}{_UNSAFE.sub('-', action)}_{_UNSAFE.sub('-', service)[:80]}_{at.astimezone(UTC):{STAMP}}"


def remove_evidence(path: str) -> bool:
    """Delete one action's bag, and its Evidence row, only if it is a madre_power_* folder right under
    <VX11_EVIDENCE_ROOT>/docs/audit/ (or its archive/) and not a symlink; anything else is left alone (and logged)."""
    from apps.evidence.models import Evidence

    audit = (settings.VX11_EVIDENCE_ROOT / "docs" / "audit").resolve()
    folder = Path(path)
    try:
        if (
            not folder.is_absolute()
            or folder.is_symlink()
            or folder.resolve() != folder
            or folder.parent not in (audit, audit / ARCHIVE)
            or not folder.name.startswith(PREFIX)
        ):
            log.warning("power: not deleting %r: not an evidence folder under %s", path, audit)
            return False
        Evidence.objects.filter(path=folder.relative_to(settings.VX11_EVIDENCE_ROOT.resolve()).as_posix()).delete()
        if not folder.is_dir():
            return False  # already gone
        shutil.rmtree(folder)  # never follows symlinks inside the folder
        return True
    except OSError as exc:
        log.warning("power: could not delete evidence folder %s: %s", path, exc)
        return False


def write_evidence(row: PowerAction, output: str) -> str:
    """Write the action's bag; returns its folder (absolute), or "" when it could not be written."""
    at = row.at.astimezone(UTC)
    result = {k: v for k, v in row.as_dict().items() if k not in ("plan", "output", "out_dir", "steps")}
    stepped = row.action in ("mode", "window_open", "window_close")
    result["steps"] = list(row.steps.values_list("id", flat=True)) if stepped else []
    files = {
        "plan.json": json.dumps(row.plan, indent=2, default=str),
        "result.json": json.dumps(result, indent=2, default=str),
        "output.log": output + ("\n" if output else ""),
    }
    info = {
        "target": row.service,
        "started_at": at,
        "finished_at": datetime.now(UTC),
        "description": f"power {row.action} {row.service} by {row.actor}: {row.result} ({row.http_status})",
    }
    try:
        bag = write_bag(
            row.action,
            "power",
            files,
            info=info,
            run_id=f"power-action-{row.pk}",
            now=at,
            folder_name=evidence_name(row.action, row.service, at),
        )
        return str(bag.folder())
    except (OSError, ValueError, bagit.BagError) as exc:  # the action happened; a full disk must not hide that
        log.warning("power: no evidence folder for action %s: %s", row.pk, exc)
        return ""


@receiver(bag_moved, dispatch_uid="power.follow_bag")
def follow_bag(sender, old: str, new: str, **kwargs) -> None:
    """Rotation moved (new) or deleted (new == "") a bag: the actions that point at it follow."""
    from .models import PowerAction

    PowerAction.objects.filter(evidence_path=old).update(evidence_path=new)
