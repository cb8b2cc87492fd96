"""Evidence folders of power actions: docs/audit/madre_power_<action>_<svc>_<YYYYmmddTHHMMSSZ>/ under
VX11_EVIDENCE_ROOT, the layout madre writes (plan.json, result.json, output.log), one per audited request.

Called by PowerAction.finish() and PowerAction.prune(); it imports no model, so models.py can import it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from .models import PowerAction

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def evidence_dir(action: str, service: str, at: datetime):
    """A new folder docs/audit/madre_power_<action>_<svc>_<stamp>[_n]/, confined to the evidence root."""
    audit = (settings.VX11_EVIDENCE_ROOT / "docs" / "audit").resolve()
    name = f"madre_power_{_UNSAFE.sub('-', action)}_{_UNSAFE.sub('-', service)[:80]}_{at:%Y%m%dT%H%M%SZ}"
    audit.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = (audit / (name if n == 1 else f"{name}_{n}")).resolve()
        if not folder.is_relative_to(audit):
            raise ValueError(f"evidence path escapes {audit}: {folder}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"too many evidence folders named {name}")


def remove_evidence(path: str) -> bool:
    """Delete one action's evidence folder, only if it is a madre_power_* folder right under
    <VX11_EVIDENCE_ROOT>/docs/audit/ and not a symlink; anything else is left alone (and logged)."""
    audit = (settings.VX11_EVIDENCE_ROOT / "docs" / "audit").resolve()
    folder = Path(path)
    try:
        if (
            not folder.is_absolute()
            or folder.is_symlink()
            or folder.resolve() != folder
            or folder.parent != audit
            or not folder.name.startswith("madre_power_")
        ):
            log.warning("power: not deleting %r: not an evidence folder under %s", path, audit)
            return False
        if not folder.is_dir():
            return False  # already gone
        shutil.rmtree(folder)  # never follows symlinks inside the folder
        return True
    except OSError as exc:
        log.warning("power: could not delete evidence folder %s: %s", path, exc)
        return False


def write_evidence(row: PowerAction, output: str) -> str:
    try:
        folder = evidence_dir(row.action, row.service, row.at.astimezone(UTC))
        result = {k: v for k, v in row.as_dict().items() if k not in ("plan", "output", "out_dir", "steps")}
        stepped = row.action in ("mode", "window_open", "window_close")
        result["steps"] = list(row.steps.values_list("id", flat=True)) if stepped else []
        (folder / "plan.json").write_text(json.dumps(row.plan, indent=2, default=str))
        (folder / "result.json").write_text(json.dumps(result, indent=2, default=str))
        (folder / "output.log").write_text(output + ("\n" if output else ""))
        return str(folder)
    except (OSError, ValueError) as exc:  # the action happened; a full disk must not hide that
        log.warning("power: no evidence folder for action %s: %s", row.pk, exc)
        return ""
