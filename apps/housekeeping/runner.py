"""A housekeeping run, a restore and a forensic archive copy, end to end; the CLI, the API and the admin call these.

run():  the permission (housekeeping.add_housekeepingrun; applying also housekeeping.apply_housekeeping), a
        HousekeepingRun row, the protected-paths list loaded, the candidates gathered (candidates.py), each one
        confined and checked (guard.py): refused paths are listed and left alone; if the excludes list protects any
        candidate the run stops there, before anything moves, and names them. A dry run (the default) ends with the
        plan; an applied run hashes what it will move, writes attic/<stamp>/MANIFEST.json, then moves
        (attic.py). Every run ends with its evidence bag (manifest.json, refused.json, housekeeping.log) and a
        `status_changed` event; the plan is announced as `plan_updated`.
restore(): puts back what an applied run moved, from its manifest, exactly or not at all (attic.restore).
archive_forensic(): copies forensic/ to docs/audit/archived_forensic/<stamp>/forensic/ (never moves it).
`now` is the clock the age rules read (audit folders older than a week); stamps and rows use the real time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from apps.evidence.bags import write_bag
from vx11_site.permissions import require, username

from . import attic
from .candidates import ATTIC, Candidate, gather
from .guard import Confined, Excludes, ExcludesError, Refused, check_contents, confine, load_excludes
from .models import HousekeepingRun

log = logging.getLogger(__name__)

# (stage, done, total, label): the CLI draws its progress bar from these calls
Progress = Callable[[str, int, int, str], None]
FORENSIC_ARCHIVE = "docs/audit/archived_forensic"


class RunLog:
    """The run's log: UTC-stamped lines, kept for the evidence bag and mirrored to the portal's log."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        self.lines.append(f"{timezone.now().isoformat(timespec='seconds')} {message}")
        log.debug("housekeeping: %s", message)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def acting(user) -> dict:
    return {"user": user if user is not None and user.pk else None, "actor": username(user)}


def managed_root(root: Path | None) -> Path:
    return Path(root or settings.VX11_ROOT)


# --- the run -----------------------------------------------------------------------------------------


def run(
    user,
    *,
    apply: bool = False,
    paths: list[str] | tuple[str, ...] = (),
    root: Path | None = None,
    now: datetime | None = None,
    via: str = "cli",
    progress: Progress | None = None,
) -> HousekeepingRun:
    """One housekeeping run (see the module's doc); returns its row, finished."""
    require(user, "a housekeeping run", "housekeeping.add_housekeepingrun")
    if apply:
        require(user, "applying housekeeping", "housekeeping.apply_housekeeping")
    root = managed_root(root)
    row = HousekeepingRun.objects.create(**acting(user), via=via, applied=apply, root=str(root))
    row.announce()
    runlog = RunLog()
    runlog(f"housekeeping #{row.pk} by {row.actor} via {via}: {'APPLY' if apply else 'dry run'} on {root}")
    manifest: dict = {}
    try:
        status, message, manifest = housekeep(row, root, now or timezone.now(), list(paths), runlog, progress)
    except Exception as exc:  # whatever failed, the row and the evidence say so; a partial move stays restorable
        log.exception("housekeeping #%s failed", row.pk)
        status, message = HousekeepingRun.Status.ERROR, f"error: {exc}"
        manifest = manifest or {"moves": row.moves}
    runlog(message)
    status, message = bag(row, status, message, manifest, runlog)
    row.finish(status, message)
    return row


def housekeep(
    row: HousekeepingRun, root: Path, now: datetime, requested: list[str], runlog: RunLog, progress: Progress | None
) -> tuple[str, str, dict]:
    """Plan, guard and (when applying) move; (status, message, manifest)."""
    Status = HousekeepingRun.Status
    if not root.is_dir():
        return Status.ERROR, f"the managed root {root} is missing or not a folder (VX11_ROOT)", {}
    root = root.resolve()
    row.root = str(root)
    try:
        excludes = load_excludes(root)
    except ExcludesError as exc:
        return Status.ERROR, f"nothing moved: {exc}", {}
    row.excludes_source = excludes.source
    runlog(f"protected paths: {len(excludes.entries)} from {excludes.source}")
    for line in excludes.ignored:
        runlog(f"excludes line ignored (not a path inside the root): {line}")
    notes: list[str] = []
    candidates = gather(root, now, requested, row.actor, notes)
    for note in notes:
        runlog(note)
    planned = guard_all(root, candidates, excludes, row, runlog)
    row.moves = [plan_entry(candidate, confined, "") for candidate, confined in planned]
    row.save()
    row.announce("plan_updated")
    if row.protected:  # the plan goes to the evidence only: nothing moved, and the row says so
        plan, row.moves = row.moves, []
        names = ", ".join(f"{p['path']} ({p['protected_by']})" for p in row.protected[:20])
        return (
            Status.ABORTED,
            f"aborted before moving anything: {len(row.protected)} candidate(s) protected by "
            f"{excludes.source}: {names}",
            {"mode": "aborted", "plan": plan},
        )
    total = sum(m["size"] for m in row.moves)
    if not row.applied:
        message = f"dry run: {len(row.moves)} path(s) would move ({total} bytes); {len(row.refused)} refused"
        return (Status.REFUSED if row.refused else Status.OK), message, {"mode": "dry-run", "moves": row.moves}
    if not planned:
        return (Status.REFUSED if row.refused else Status.OK), f"nothing to move; {len(row.refused)} refused", {}
    manifest = move_all(row, root, planned, runlog, progress)
    moved = [m for m in row.moves if m.get("moved")]
    message = (
        f"moved {len(moved)} path(s) ({row.bytes_moved} bytes) into {ATTIC}/{row.attic_stamp}/; "
        f"{len(row.refused)} refused; undo with `vx11 restore {row.attic_stamp}`"
    )
    return (Status.REFUSED if row.refused else Status.OK), message, manifest


def guard_all(
    root: Path, candidates: list[Candidate], excludes: Excludes, row: HousekeepingRun, runlog: RunLog
) -> list[tuple[Candidate, Confined]]:
    """Each candidate through the guards: refused ones and protected ones recorded on the row, the rest returned."""
    planned, seen = [], set()
    for candidate in candidates:
        try:
            confined = confine(root, candidate.path)
            if confined.parts[0] == ATTIC:
                raise Refused(f"{candidate.path}: already in the attic")
            check_contents(root, confined)
            if candidate.archive:
                destination = confine(root, candidate.archive, must_exist=False)
                if destination.relative != candidate.archive:
                    raise Refused(f"{candidate.archive}: leads elsewhere through a symlink")
                if destination.path.exists() or destination.path.is_symlink():
                    raise Refused(f"{candidate.archive}: exists already; nothing is replaced")
        except Refused as exc:
            row.refused.append({"path": candidate.path, "category": candidate.category, "reason": str(exc)})
            runlog(f"REFUSED {exc}")
            continue
        if confined.relative in seen:
            continue
        seen.add(confined.relative)
        rule = excludes.protecting(confined.relative)
        if rule is not None:
            row.protected.append({"path": confined.relative, "category": candidate.category, "protected_by": rule})
            runlog(f"PROTECTED {confined.relative}: by the excludes entry {rule}")
            continue
        planned.append((candidate, confined))
    return planned


def plan_entry(candidate: Candidate, confined: Confined, stamp: str) -> dict:
    size = sum(f["size"] for f in attic.files_of(confined.path.parent, confined.path.name, "", with_hash=False))
    return {
        "path": confined.relative,
        "category": candidate.category,
        "reason": candidate.reason,
        "stored": candidate.archive or f"{ATTIC}/{stamp or '<stamp>'}/{confined.relative}",
        "size": size,
    }


def move_all(
    row: HousekeepingRun,
    root: Path,
    planned: list[tuple[Candidate, Confined]],
    runlog: RunLog,
    progress: Progress | None,
) -> dict:
    """Hash, write the manifest, move; the manifest is rewritten at the end with what moved."""
    row.attic_stamp = attic.free_stamp(root, timezone.now())
    row.save(update_fields=["attic_stamp"])
    moves, files = [], []
    for done, (candidate, confined) in enumerate(planned):
        if progress:
            progress("hashing", done, len(planned), confined.relative)
        entry = plan_entry(candidate, confined, row.attic_stamp)
        taken = attic.files_of(root, confined.relative, entry["stored"], with_hash=True)
        moves.append({"original": confined.relative, **entry, "files": len(taken), "moved": None})
        files.extend(taken)
    if progress:
        progress("hashing", len(planned), len(planned), "")
    manifest = {
        "format": attic.MANIFEST_FORMAT,
        "stamp": row.attic_stamp,
        "root": str(root),
        "run_id": row.pk,
        "actor": row.actor,
        "created_at": timezone.now().isoformat(),
        "moves": moves,
        "files": files,
    }
    attic.write_manifest(root, row.attic_stamp, manifest)
    for done, move in enumerate(moves):
        if progress:
            progress("moving", done, len(moves), move["original"])
        try:
            attic.move(root, move["original"], move["stored"])
            move["moved"] = True
            runlog(f"moved {move['original']} -> {move['stored']} ({move['size']} bytes, {move['files']} file(s))")
        except Refused as exc:
            move["moved"] = False
            row.refused.append({"path": move["original"], "category": move["category"], "reason": str(exc)})
            runlog(f"REFUSED {exc}")
    if progress:
        progress("moving", len(moves), len(moves), "")
    attic.write_manifest(root, row.attic_stamp, manifest)
    row.moves = [{k: v for k, v in m.items() if k != "original"} for m in moves]
    row.bytes_moved = sum(m["size"] for m in moves if m["moved"])
    return manifest


def bag(row: HousekeepingRun, status: str, message: str, manifest: dict, runlog: RunLog) -> tuple[str, str]:
    """The run's evidence bag; a bag that cannot be written turns the status into an error, the moves stay."""
    refused = {
        "excludes_source": row.excludes_source,
        "refused": row.refused,
        "protected": row.protected,
    }
    info = {
        "target": row.root,
        "started_at": row.started_at.isoformat(),
        "finished_at": timezone.now().isoformat(),
        "mode": "apply" if row.applied else "dry-run",
        "status": status,
        "attic_stamp": row.attic_stamp,
        "description": message[:500],
    }
    name = row.operation if row.applied else f"{row.operation}_dry_run"
    files = {
        "manifest.json": json.dumps(manifest or {"moves": row.moves}, indent=2, default=str),
        "refused.json": json.dumps(refused, indent=2),
        f"{row.operation}.log": runlog.text(),
    }
    try:
        evidence = write_bag(name, "housekeeping", files, info=info, run_id=f"housekeeping-{row.pk}")
    except Exception as exc:
        log.exception("housekeeping #%s: evidence bag not written", row.pk)
        return HousekeepingRun.Status.ERROR, f"{message}; the evidence bag could not be written: {exc}"
    row.evidence_path = evidence.path
    return status, message


# --- restore -----------------------------------------------------------------------------------------


def restore(user, stamp: str, *, root: Path | None = None, via: str = "cli", progress: Progress | None = None) -> dict:
    """Put back what attic/<stamp>/ holds (attic.restore); RestoreRefused when it cannot be done exactly (nothing
    moved then). The run of that stamp records when and by whom, or the refusal; an evidence bag either way."""
    require(user, "restoring a housekeeping run", "housekeeping.restore_housekeeping")
    root = managed_root(root).resolve()
    row = HousekeepingRun.objects.filter(attic_stamp=stamp, root=str(root)).first() if stamp else None
    now = timezone.now()
    steps: list[str] = []

    def step(path: str) -> None:
        steps.append(path)
        if progress:
            progress("restoring", len(steps) - 1, 0, path)

    try:
        result = attic.restore(root, stamp, now, step)
    except attic.RestoreRefused as exc:
        refusal = {"refused": str(exc), "status": exc.status, "at": now.isoformat(), "by": username(user)}
        if row is not None:
            row.restore_result = refusal
            row.save(update_fields=["restore_result"])
        restore_bag(stamp, root, refusal, row, user)
        raise
    result["status"] = "ok" if not result["mismatches"] else "modified"
    result["restored_by"] = username(user)
    result["restored_at"] = now.isoformat()
    if row is not None:
        row.restored_at = now
        row.restored_by = username(user)
        row.restore_result = result
        row.save(update_fields=["restored_at", "restored_by", "restore_result"])
        row.announce()
    result["run_id"] = row.pk if row is not None else None
    result["evidence_path"] = restore_bag(stamp, root, result, row, user)
    return result


def restore_bag(stamp: str, root: Path, result: dict, row: HousekeepingRun | None, user) -> str:
    files = {"restore.json": json.dumps(result, indent=2, default=str)}
    info = {"target": str(root), "attic_stamp": stamp, "restored_by": username(user)}
    try:
        run_id = f"housekeeping-{row.pk}" if row is not None else f"attic-{stamp}"
        return write_bag("housekeeping_restore", "housekeeping", files, info=info, run_id=run_id).path
    except Exception:
        log.exception("restore of %s: evidence bag not written", stamp)
        return ""


# --- forensic archive --------------------------------------------------------------------------------


def archive_forensic(user, *, root: Path | None = None, via: str = "cli") -> HousekeepingRun:
    """Copy forensic/ to docs/audit/archived_forensic/<stamp>/forensic/ (files with their mtimes, symlinks as
    links); forensic/ itself is never touched. The copy keeps `forensic` in its path, so the guards protect it too."""
    require(user, "archiving forensic/", "housekeeping.apply_housekeeping")
    root = managed_root(root)
    row = HousekeepingRun.objects.create(
        **acting(user), via=via, applied=True, root=str(root), operation=HousekeepingRun.Operation.ARCHIVE_FORENSIC
    )
    row.announce()
    runlog = RunLog()
    manifest: dict = {}
    try:
        if not root.is_dir():
            raise Refused(f"the managed root {root} is missing or not a folder (VX11_ROOT)")
        root = root.resolve()
        destination = f"{FORENSIC_ARCHIVE}/{attic.stamp_of(timezone.now())}/forensic"
        files = attic.copy_tree(root, "forensic", destination)
        size = sum(f["size"] for f in files)
        row.moves = [{"path": "forensic", "category": "forensic_copy", "stored": destination, "size": size}]
        row.bytes_moved = size
        manifest = {"copied_from": "forensic", "copied_to": destination, "files": files}
        status, message = HousekeepingRun.Status.OK, f"copied forensic/ to {destination} ({len(files)} files)"
    except Refused as exc:
        row.refused = [{"path": "forensic", "category": "forensic_copy", "reason": str(exc)}]
        status, message = HousekeepingRun.Status.REFUSED, f"nothing copied: {exc}"
    except OSError as exc:
        status, message = HousekeepingRun.Status.ERROR, f"error: {exc}"
    runlog(message)
    status, message = bag(row, status, message, manifest, runlog)
    row.finish(status, message)
    return row
