"""Evidence bags: every audit, housekeeping run and power action leaves a BagIt bag (RFC 8493) under
<VX11_EVIDENCE_ROOT>/docs/audit/, made and checked by the `bagit` library.

A bag is a folder `docs/audit/<YYYYmmddTHHMMSSZ>_<name>/` (power keeps its madre_power_<action>_<svc>_<stamp>
names) holding
    bagit.txt, bag-info.txt              the BagIt declaration; run id, portal version, target, UTC times
    manifest-sha256.txt                  sha256 of every payload file
    tagmanifest-sha256.txt               sha256 of the tag files above, so bag-info.txt is covered too
    data/...                             the payload, plus data/EVIDENCE_INDEX.md for people
and one `Evidence` row indexes it. `verify()` re-hashes a bag and names the file that changed, went
missing or appeared; `verify_indexed()` also compares the manifests with the hashes indexed when the bag
was written, which catches a bag re-made from scratch after an edit.

bagit.make_bag and Bag.save change the process's working directory while they run; every call here holds
_BAGIT_LOCK, and the portal itself only uses absolute paths, so another thread is not affected.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bagit
from django.conf import settings
from django.utils import timezone

if TYPE_CHECKING:
    from .models import Evidence

log = logging.getLogger(__name__)
logging.getLogger("bagit").setLevel(logging.ERROR)  # its per-file warnings repeat what verify() reports

ALGORITHM = "sha256"
MANIFEST = f"manifest-{ALGORITHM}.txt"
TAGMANIFEST = f"tagmanifest-{ALGORITHM}.txt"
TAG_FILES = ("bagit.txt", "bag-info.txt", MANIFEST, TAGMANIFEST)  # every bag written here has these
INDEX = "EVIDENCE_INDEX.md"
STAMP = "%Y%m%dT%H%M%SZ"
ARCHIVE = "archive"
FORENSIC = "forensic"

_BAGIT_LOCK = threading.Lock()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# labels bag-info.txt gets for the usual keys of `info`; any other key becomes VX11-<Key-In-Title-Case>
_LABELS = {
    "target": "VX11-Target",
    "started_at": "VX11-Started-At",
    "finished_at": "VX11-Finished-At",
    "description": "External-Description",
}
# the order findings rank in when a check finds several kinds: a changed file is the worst news
_SEVERITY = ("modified", "missing", "extra")


def portal_version() -> str:
    try:
        return metadata.version("vx11-ops-portal")
    except metadata.PackageNotFoundError:
        return "unknown"


def evidence_root(root: Path | None = None) -> Path:
    return Path(root or settings.VX11_EVIDENCE_ROOT).resolve()


def audit_dir(root: Path | None = None) -> Path:
    """<root>/docs/audit/, made if missing; refused if it is a symlink leading out of the root."""
    base = evidence_root(root)
    audit = base / "docs" / "audit"
    audit.mkdir(parents=True, exist_ok=True)
    resolved = audit.resolve()
    if not resolved.is_relative_to(base):
        raise ValueError(f"evidence folder escapes {base}: {resolved}")
    return resolved


def safe_name(name: str) -> str:
    cleaned = _UNSAFE.sub("-", name).strip("-.")[:120]
    if not cleaned:
        raise ValueError(f"evidence bag name {name!r} has no usable character")
    return cleaned


def _confined(base: Path, relative: str) -> Path:
    """base/relative, refused if absolute, with '..', or otherwise not inside base."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise ValueError(f"evidence file name {relative!r} must be a relative path without '..'")
    target = base / relative
    if not target.resolve().is_relative_to(base.resolve()):
        raise ValueError(f"evidence file {relative!r} escapes {base}")
    return target


def _reserve(audit: Path, name: str) -> Path:
    """An empty folder audit/name[_n]/ made for this bag alone, so two bags of the same second never collide."""
    for n in range(1, 1000):
        folder = audit / (name if n == 1 else f"{name}_{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"too many evidence bags named {name}")


def _as_bytes(content: str | bytes) -> bytes:
    return content if isinstance(content, bytes) else content.encode("utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _info_value(value: Any) -> str:
    text = value.astimezone(UTC).isoformat() if isinstance(value, datetime) else str(value)
    return " ".join(text.split())  # bag-info.txt is one line per label


def _bag_info(name: str, kind: str, run_id: str, info: dict, made: datetime) -> dict[str, str]:
    tags = {
        "Source-Organization": "VX11 Ops Portal",
        "Bag-Software-Agent": f"vx11-ops-portal {portal_version()} (bagit.py {bagit.VERSION})",
        "External-Identifier": name,
        "VX11-Kind": kind,
        "VX11-Run-Id": run_id,
        "VX11-Portal-Version": portal_version(),
        "VX11-Created-At": made.isoformat(),
        "Bagging-Date": made.date().isoformat(),
    }
    for key, value in info.items():
        label = _LABELS.get(key) or "VX11-" + "-".join(part.capitalize() for part in re.split(r"[_\s-]+", key))
        tags[label] = _info_value(value)
    return tags


def _index_text(name: str, kind: str, run_id: str, info: dict, made: datetime, payload: Path, more: str = "") -> str:
    lines = [
        f"# Evidence: {name}",
        "",
        f"- kind: {kind}",
        f"- run id: {run_id or '-'}",
        f"- written at (UTC): {made.isoformat()}",
        f"- portal version: {portal_version()}",
    ]
    lines += [f"- {key}: {_info_value(value)}" for key, value in info.items()]
    if more:
        lines += ["", more.rstrip()]
    lines += [
        "",
        "A BagIt bag (RFC 8493): the files below are under data/, their sha256 are in manifest-sha256.txt and",
        "tagmanifest-sha256.txt covers bag-info.txt. Check it by hand with `python -m bagit --validate <this folder>`",
        "or `manage.py vx11 evidence verify <this folder>`.",
        "",
        "| file | bytes | sha256 |",
        "| --- | ---: | --- |",
    ]
    for file in sorted(p for p in payload.rglob("*") if p.is_file()):
        lines.append(f"| {file.relative_to(payload).as_posix()} | {file.stat().st_size} | {_sha256(file)} |")
    return "\n".join(lines) + "\n"


def _hashes(folder: Path, bag: bagit.Bag) -> dict[str, str]:
    return {
        "payload_oxum": str(bag.info.get("Payload-Oxum", "")),
        "manifest_sha256": _sha256(folder / MANIFEST),
        "tagmanifest_sha256": _sha256(folder / TAGMANIFEST),
    }


def make(
    folder_name: str,
    files: dict[str, str | bytes],
    *,
    kind: str,
    run_id: str,
    info: dict,
    made: datetime,
    root: Path | None = None,
    index: str = "",
) -> tuple[Path, dict[str, str]]:
    """Write the bag audit/<folder_name>[_n]/ and return (its folder, its hashes). Nothing is indexed.

    The bag is built in a private staging folder and renamed over the reserved empty one, so a reader never
    sees half a bag under its final name."""
    audit = audit_dir(root)
    if INDEX in files:
        raise ValueError(f"{INDEX} is written by the portal; name the file otherwise")
    folder = _reserve(audit, folder_name)
    staging = Path(tempfile.mkdtemp(prefix=".bag-", dir=audit))
    try:
        for relative, content in files.items():
            target = _confined(staging, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_as_bytes(content))
        (staging / INDEX).write_text(_index_text(folder.name, kind, run_id, info, made, staging, index))
        with _BAGIT_LOCK:
            bag = bagit.make_bag(str(staging), _bag_info(folder.name, kind, run_id, info, made), checksums=[ALGORITHM])
        hashes = _hashes(staging, bag)
        os.chmod(staging, 0o755)  # mkdtemp made it private; the bag is as readable as any other folder
        staging.rename(folder)  # replaces the empty reserved folder in one step
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        folder.rmdir()
        raise
    return folder, hashes


def relative_path(folder: Path) -> str:
    """What Evidence.path stores: the folder relative to VX11_EVIDENCE_ROOT, or absolute if outside it."""
    base = evidence_root()
    return folder.relative_to(base).as_posix() if folder.is_relative_to(base) else str(folder)


def write_bag(
    name: str,
    kind: str,
    files: dict[str, str | bytes],
    *,
    info: dict | None = None,
    run_id: str = "",
    now: datetime | None = None,
    root: Path | None = None,
    folder_name: str = "",
    index: str = "",
) -> Evidence:
    """Write docs/audit/<YYYYmmddTHHMMSSZ>_<name>/ as a bag and index it. `files` maps payload names (which may
    contain "/") to their contents; `info` adds bag-info.txt labels (target, started_at, finished_at, ...).
    `folder_name` replaces the <stamp>_<name> folder name as a whole (power's madre_power_... folders); `index` is
    markdown put in EVIDENCE_INDEX.md before its table of files (the pipeline's per-phase account)."""
    from .models import Evidence

    made = (now or timezone.now()).astimezone(UTC).replace(microsecond=0)
    info = dict(info or {})
    bag_folder_name = safe_name(folder_name) if folder_name else f"{made:{STAMP}}_{safe_name(name)}"
    folder, hashes = make(
        bag_folder_name, files, kind=kind, run_id=run_id, info=info, made=made, root=root, index=index
    )
    try:
        return Evidence.objects.create(path=relative_path(folder), kind=kind, run_id=run_id, created_at=made, **hashes)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # an unindexed bag would never be checked or rotated
        raise


def write_latest(files: dict[str, str | bytes], root: Path | None = None) -> list[Path]:
    """Write the canonical "latest" files (DB_SCHEMA_v7_FINAL.json, ...) directly in docs/audit/, each replaced
    in one step (a reader sees the old file or the new one, never half of one). Bags never live there by name."""
    audit = audit_dir(root)
    written = []
    for relative, content in files.items():
        target = _confined(audit, relative)
        if target.is_dir() or Path(relative).parts[0] == ARCHIVE:
            raise ValueError(f"{relative!r} is a folder of evidence bags, not a latest file")
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".latest-", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(_as_bytes(content))
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


# --- checking ---------------------------------------------------------------------------------------


def _finding(file: str, problem: str, why: str) -> dict[str, str]:
    return {"file": file, "problem": problem, "why": why}


def _extra_tag_files(folder: Path, bag: bagit.Bag) -> list[dict[str, str]]:
    """Files outside data/ that no tag manifest lists: bagit allows them, but every bag written here lists all
    of its tag files, so one that appeared later was added."""
    if not (folder / TAGMANIFEST).is_file():
        return []  # reported missing already; without it no tag file is listed
    listed = set(bag.tagfile_entries()) | set(TAG_FILES)
    found = []
    for file in sorted(folder.rglob("*")):
        relative = file.relative_to(folder).as_posix()
        if relative.startswith("data/") or not file.is_file() or relative.startswith("tagmanifest-"):
            continue
        if relative not in listed:
            found.append(_finding(relative, "extra", "a tag file no tag manifest lists"))
    return found


def _summary(findings: list[dict[str, str]]) -> dict:
    if not findings:
        return {"state": "valid", "files": [], "detail": "every file matches its manifest"}
    state = next(s for s in _SEVERITY if any(f["problem"] == s for f in findings))
    detail = "; ".join(f"{f['problem']}: {f['file']} ({f['why']})" for f in findings)
    return {"state": state, "files": findings, "detail": detail}


def verify(path: str | Path) -> dict:
    """Re-hash one bag: {state: valid|modified|missing|extra|not_a_bag, files: [{file, problem, why}], detail}.

    `path` is the bag folder, absolute or relative to VX11_EVIDENCE_ROOT. Files are named relative to the bag
    (data/result.json, bag-info.txt). bagit stops at its first failing stage (structure, completeness, then
    hashes), so a bag with a file missing and another changed reports the missing one first."""
    folder = Path(path)
    if not folder.is_absolute():
        folder = evidence_root() / folder
    if not folder.is_dir():
        return {
            "state": "missing",
            "files": [_finding(".", "missing", "no bag folder")],
            "detail": f"no folder {folder}",
        }
    findings = [
        _finding(name, "missing", "a tag file every bag has") for name in TAG_FILES if not (folder / name).is_file()
    ]
    if not (folder / "bagit.txt").is_file() and not any(folder.glob("manifest-*.txt")):
        return {
            "state": "not_a_bag",
            "files": findings,
            "detail": f"{folder} is not a BagIt bag (no bagit.txt, no manifest)",
        }
    if {"bagit.txt", MANIFEST} & {f["file"] for f in findings}:
        return _summary(findings)  # bagit cannot read the rest without them
    try:
        bag = bagit.Bag(str(folder))
    except bagit.BagError as exc:
        return {"state": "not_a_bag", "files": [], "detail": f"{folder}: {exc}"}
    # With a Payload-Oxum bagit first compares only totals, and fails without naming a file; without it, it
    # goes on to compare file by file. The oxum is still checked: bag-info.txt is covered by the tag manifest.
    bag.info.pop("Payload-Oxum", None)
    try:
        with _BAGIT_LOCK:
            bag.validate(processes=1)
    except bagit.BagValidationError as exc:
        for error in exc.details:
            if isinstance(error, bagit.ChecksumMismatch):
                findings.append(_finding(error.path, "modified", f"{error.algorithm} differs from the manifest"))
            elif isinstance(error, bagit.FileMissing):
                findings.append(_finding(error.path, "missing", "listed in a manifest, not on disk"))
            elif isinstance(error, bagit.UnexpectedFile):
                findings.append(_finding(error.path, "extra", "on disk, in no manifest"))
        if not exc.details:
            return {"state": "not_a_bag", "files": findings, "detail": f"{folder}: {exc}"}
    except bagit.BagError as exc:
        return {"state": "not_a_bag", "files": findings, "detail": f"{folder}: {exc}"}
    findings += _extra_tag_files(folder, bag)
    return _summary(findings)


def verify_indexed(row: Evidence) -> dict:
    """verify() plus what only the index knows: the manifests must still be the ones written with the bag."""
    folder = row.folder()
    result = verify(folder)
    if result["state"] != "valid":
        return result
    findings = []
    for name, indexed in ((MANIFEST, row.manifest_sha256), (TAGMANIFEST, row.tagmanifest_sha256)):
        if indexed and _sha256(folder / name) != indexed:
            findings.append(_finding(name, "modified", "differs from the one indexed when the bag was written"))
    return _summary(findings) if findings else result


def reseal_bag(folder: Path) -> dict[str, str]:
    """Rewrite a bag's manifests over its current files (bagit's Bag.save(manifests=True)); returns its hashes."""
    if not (folder / "bagit.txt").is_file() or not (folder / "data").is_dir():
        raise ValueError(f"cannot re-seal {folder}: it is no longer a bag (no bagit.txt or data/)")
    bag = bagit.Bag(str(folder))
    old_dir = os.getcwd()
    with _BAGIT_LOCK:
        try:
            bag.save(manifests=True)
        finally:
            os.chdir(old_dir)  # Bag.save leaves the bag's folder as working directory when it fails
    bag = bagit.Bag(str(folder))  # the tag manifest now lists every tag file there is, a stray one too
    return _hashes(folder, bag)
