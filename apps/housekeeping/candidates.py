"""What a housekeeping run proposes to move, and where to; the guards (guard.py) decide what may.

- stray generated files (`*_openapi.json`, `functional_flow_results.json`, `__pycache__`), as the filesystem
  check lists them (apps.audits.fs.check_fs): to attic/<stamp>/<their path>;
- backups: the files of data/backups/ beyond the VX11_BACKUP_KEEP (2) newest by mtime: to data/backups/archived/,
  as VX11's rotation did;
- audit folders docs/audit/<YYYYmmddTHHMMSSZ>_<name>/ older than VX11_HOUSEKEEPING_AUDIT_DAYS (7) by the stamp in
  their name: to attic/<stamp>/. A BagIt bag (bagit.txt inside) is the evidence rotation's, not moved here;
- paths an operator asks for (CLI --path, the API's `paths`): to attic/<stamp>/<their path>.
A candidate inside another candidate is dropped: it moves with it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings

from apps.audits.fs import check_fs

BACKUPS = "data/backups"
BACKUPS_ARCHIVE = "data/backups/archived"
AUDIT = "docs/audit"
ATTIC = "attic"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
AUDIT_FOLDER = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)_.+")


@dataclass
class Candidate:
    path: str  # relative POSIX path under the managed root, as proposed (the guards resolve it)
    category: str  # stray | backup | audit_folder | requested
    reason: str
    archive: str = ""  # where it goes when not the attic (a backup: data/backups/archived/<name>)

    def as_dict(self) -> dict:
        return asdict(self)


def real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def strays(root: Path) -> list[Candidate]:
    found = check_fs(root, settings.VX11_FS_ALLOWED_ROOTS)["stray_files"]
    return [Candidate(s["path"], "stray", f"stray generated file ({s['kind']})") for s in found]


def old_backups(root: Path, keep: int, notes: list[str]) -> list[Candidate]:
    """The files of data/backups/ beyond the `keep` newest by mtime (ties: the name decides)."""
    folder = root / BACKUPS
    if not os.path.lexists(folder):
        return []
    if not real_dir(folder):
        notes.append(f"{BACKUPS} is not a real folder (a symlink?): backups not rotated")
        return []
    files = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == Path(BACKUPS_ARCHIVE).name or entry.is_dir():  # folders, and links to folders, stay
                continue
            if entry.is_file(follow_symlinks=False) or entry.is_symlink():  # a link out is the guards' to refuse
                files.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
    files.sort(reverse=True)
    return [
        Candidate(
            f"{BACKUPS}/{name}",
            "backup",
            f"backup beyond the {keep} newest (mtime {datetime.fromtimestamp(mtime / 1e9, UTC):%Y-%m-%dT%H:%M:%SZ})",
            archive=f"{BACKUPS_ARCHIVE}/{name}",
        )
        for mtime, name in files[keep:]
    ]


def old_audit_folders(root: Path, now: datetime, days: int, notes: list[str]) -> list[Candidate]:
    """docs/audit/<stamp>_* folders whose stamp is more than `days` days before `now`."""
    folder = root / AUDIT
    if not real_dir(folder):
        return []
    cutoff = now - timedelta(days=days)
    found = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            match = AUDIT_FOLDER.match(entry.name)
            if not match or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                stamp = datetime.strptime(match["stamp"], STAMP_FORMAT).replace(tzinfo=UTC)
            except ValueError:
                continue
            if stamp >= cutoff:
                continue
            if os.path.lexists(Path(entry.path) / "bagit.txt"):
                notes.append(f"{AUDIT}/{entry.name}: an evidence bag; the evidence rotation archives it")
                continue
            found.append(
                Candidate(
                    f"{AUDIT}/{entry.name}", "audit_folder", f"audit folder of {stamp:%Y-%m-%d}, over {days} days"
                )
            )
    return found


def without_nested(candidates: list[Candidate]) -> list[Candidate]:
    """Drop a candidate inside another one (it moves with it) and repeats; keep the order."""
    kept: list[Candidate] = []
    paths = {c.path.strip("/") for c in candidates}
    seen = set()
    for candidate in candidates:
        path = candidate.path.strip("/")
        parents = {"/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)}
        if path in seen or parents & paths:
            continue
        seen.add(path)
        kept.append(candidate)
    return kept


def gather(root: Path, now: datetime, requested: list[str], requester: str, notes: list[str]) -> list[Candidate]:
    """Every candidate of a run (see the module's doc), requested paths first."""
    asked = [Candidate(path, "requested", f"asked for by {requester}") for path in requested]
    found = (
        asked
        + strays(root)
        + old_backups(root, settings.VX11_BACKUP_KEEP, notes)
        + old_audit_folders(root, now, settings.VX11_HOUSEKEEPING_AUDIT_DAYS, notes)
    )
    return without_nested(found)
