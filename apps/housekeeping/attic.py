"""Moving into the attic and back: the filesystem half of housekeeping, nothing ever deleted.

Every move is a rename between two folders opened from the managed root one component at a time with
O_NOFOLLOW (`open_dir`), so a folder swapped for a symlink after the guards looked is refused instead of
followed; a rename keeps the bytes, permissions and mtimes. A move across filesystems (a mount inside the tree)
is refused rather than copied and deleted.

attic/<stamp>/MANIFEST.json (written before the first move, rewritten after the last) lists every move
(original path, where it is stored, why) and every file moved (original path, size, sha256, mtime in ns;
a symlink with its target). `restore()` reads it and puts each move back: it first checks every path (confined to
the root, stored only under attic/<stamp>/ or data/backups/archived/, nothing existing again at an original
path: then it restores nothing), moves everything back and re-hashes every file against the manifest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from .candidates import ATTIC, BACKUPS_ARCHIVE
from .guard import Refused, confine, inside

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = "vx11-housekeeping-manifest/1"
STAMP = re.compile(r"^\d{8}T\d{6}Z(?:_\d{1,3})?$")
CHUNK = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

Progress = Callable[[str], None]


class RestoreRefused(Exception):
    """A restore that did not start: `status` is the HTTP answer (404 unknown stamp, 409 conflicts, 422 bad)."""

    def __init__(self, status: int, message: str, conflicts: list | None = None):
        super().__init__(message)
        self.status = status
        self.conflicts = conflicts or []


def stamp_of(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


# --- folders opened without following symlinks -------------------------------------------------------


@contextlib.contextmanager
def open_dir(root: Path, parts: tuple[str, ...] | list[str], create: bool = False) -> Iterator[int]:
    """A descriptor of root/parts..., each component opened with O_NOFOLLOW (a symlink is refused); `create`
    makes missing folders."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in parts:
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refused(f"{'/'.join(parts)}: {part} is a symlink or not a folder") from None
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def exists_at(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def move(root: Path, source: str, destination: str) -> None:
    """Rename root/source to root/destination (both relative, already confined), refusing to replace anything."""
    src, dst = source.split("/"), destination.split("/")
    with open_dir(root, src[:-1]) as src_fd, open_dir(root, dst[:-1], create=True) as dst_fd:
        if not exists_at(src_fd, src[-1]):
            raise Refused(f"{source}: gone before it could be moved")
        if exists_at(dst_fd, dst[-1]):
            raise Refused(f"{destination}: exists already; nothing is replaced")
        try:
            os.rename(src[-1], dst[-1], src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise Refused(f"{source}: on another filesystem than {destination}; not copied and deleted") from None
            raise


# --- what a move takes along --------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def entry_record(path: Path, original: str, stored: str, with_hash: bool) -> dict:
    info = path.lstat()
    record: dict = {"original": original, "stored": stored, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    if stat.S_ISLNK(info.st_mode):
        record["symlink"] = os.readlink(path)
    elif with_hash:
        record["sha256"] = sha256_of(path)
    return record


def files_of(root: Path, relative: str, stored: str, with_hash: bool) -> list[dict]:
    """Every file (and symlink) a move of root/relative takes along, with size, mtime and, `with_hash`, sha256."""
    top = root / relative
    if top.is_symlink() or not top.is_dir():
        return [entry_record(top, relative, stored, with_hash)]
    records = []
    for folder, dirs, files in os.walk(top, followlinks=False):
        dirs.sort()
        here = Path(folder)
        symlinked_dirs = [d for d in dirs if (here / d).is_symlink()]
        for name in sorted(files + symlinked_dirs):
            inner = (here / name).relative_to(top).as_posix()
            records.append(entry_record(here / name, f"{relative}/{inner}", f"{stored}/{inner}", with_hash))
    return records


# --- the manifest --------------------------------------------------------------------------------------


def write_manifest(root: Path, stamp: str, manifest: dict) -> None:
    """attic/<stamp>/MANIFEST.json, written whole (a temporary file renamed over the old one)."""
    data = json.dumps(manifest, indent=2).encode()
    with open_dir(root, (ATTIC, stamp), create=True) as fd:
        temporary = f".{MANIFEST}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=fd)
        out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        with os.fdopen(out, "wb") as handle:
            handle.write(data)
        os.replace(temporary, MANIFEST, src_dir_fd=fd, dst_dir_fd=fd)


def read_manifest(root: Path, stamp: str) -> dict:
    if not STAMP.match(stamp or ""):
        raise RestoreRefused(422, f"{stamp!r} is not an attic stamp (YYYYmmddTHHMMSSZ)")
    try:
        with open_dir(root, (ATTIC, stamp)) as fd:
            handle = os.open(MANIFEST, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
            with os.fdopen(handle, "rb") as stream:
                manifest = json.loads(stream.read())
    except FileNotFoundError:
        raise RestoreRefused(404, f"no {ATTIC}/{stamp}/{MANIFEST} under {root}") from None
    except (Refused, OSError, ValueError) as exc:
        raise RestoreRefused(422, f"{ATTIC}/{stamp}/{MANIFEST} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise RestoreRefused(422, f"{ATTIC}/{stamp}/{MANIFEST} is not a housekeeping manifest")
    return manifest


def free_stamp(root: Path, now: datetime) -> str:
    """attic/<stamp> not used yet: the run's UTC second, with _2, _3... when two runs share it."""
    base = stamp_of(now)
    for n in range(1, 1000):
        stamp = base if n == 1 else f"{base}_{n}"
        if not os.path.lexists(root / ATTIC / stamp):
            return stamp
    raise Refused(f"{ATTIC}/{base}: no free stamp")


# --- restore -------------------------------------------------------------------------------------------


def stored_place_ok(stored: str, stamp: str) -> bool:
    """Where a manifest may say something is stored: its own attic folder, or the backups archive."""
    return stored.startswith(f"{ATTIC}/{stamp}/") or (
        stored.startswith(f"{BACKUPS_ARCHIVE}/") and stored.count("/") == BACKUPS_ARCHIVE.count("/") + 1
    )


def plan_restore(root: Path, stamp: str, manifest: dict) -> list[dict]:
    """The moves to undo, each path checked; RestoreRefused (nothing moved) on any bad or conflicting path."""
    moves = manifest.get("moves")
    if not isinstance(moves, list):
        raise RestoreRefused(422, f"{ATTIC}/{stamp}/{MANIFEST} has no list of moves")
    conflicts, refused, todo = [], [], []
    for move_ in moves:
        if not isinstance(move_, dict) or move_.get("moved") is False:
            continue  # a move that never happened (the run stopped before it) has nothing to undo
        original, stored = str(move_.get("original", "")), str(move_.get("stored", ""))
        try:
            back = confine(root, original, must_exist=False)
            kept = confine(root, stored, must_exist=False)
        except Refused as exc:
            refused.append(str(exc))
            continue
        if back.relative != original or kept.relative != stored or not stored_place_ok(stored, stamp):
            refused.append(f"{original} <- {stored}: not a place this manifest may restore from or to")
            continue
        if back.relative.split("/")[0] == ATTIC:
            refused.append(f"{original}: inside the attic")
            continue
        if not os.path.lexists(kept.path):
            if os.path.lexists(back.path):
                continue  # already back where it was (an earlier, interrupted restore)
            refused.append(f"{stored}: missing from the attic")
            continue
        if os.path.lexists(back.path):
            conflicts.append(original)
            continue
        todo.append({"original": original, "stored": stored})
    if refused:
        raise RestoreRefused(422, "the manifest names paths that cannot be restored: " + "; ".join(refused[:20]))
    if conflicts:
        raise RestoreRefused(
            409,
            f"{len(conflicts)} path(s) exist again and would be overwritten: {', '.join(conflicts[:20])}; "
            "move them away first, nothing was restored",
            conflicts,
        )
    return todo


def verify_files(root: Path, manifest: dict) -> list[dict]:
    """Every file of the manifest at its original path, compared with its recorded size and sha256 (or
    symlink target): the mismatches."""
    mismatches = []
    for record in manifest.get("files") or []:
        original = record.get("original", "")
        try:
            path = confine(root, original, must_exist=False).path
        except Refused as exc:
            mismatches.append({"path": original, "problem": str(exc)})
            continue
        if not os.path.lexists(path):
            mismatches.append({"path": original, "problem": "missing after the restore"})
        elif "symlink" in record:
            if not path.is_symlink() or os.readlink(path) != record["symlink"]:
                mismatches.append({"path": original, "problem": "symlink target differs"})
        elif "sha256" in record and sha256_of(path) != record["sha256"]:
            mismatches.append({"path": original, "problem": "sha256 differs from the manifest"})
        elif path.lstat().st_size != record.get("size"):
            mismatches.append({"path": original, "problem": "size differs from the manifest"})
    return mismatches


def remove_empty_folders(root: Path, stamp: str) -> None:
    """The folders the moves left empty in attic/<stamp>/ (rmdir refuses any that still holds something)."""
    top = root / ATTIC / stamp
    for folder, _dirs, _files in sorted(os.walk(top, followlinks=False), key=lambda w: -len(w[0])):
        if Path(folder) != top:
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def restore(root: Path, stamp: str, now: datetime, progress: Progress | None = None) -> dict:
    """Undo the moves of attic/<stamp>/MANIFEST.json (see the module's doc): {stamp, restored, verified,
    mismatches}; RestoreRefused before anything moves when it cannot be done exactly."""
    manifest = read_manifest(root, stamp)
    if manifest.get("restored_at"):
        raise RestoreRefused(409, f"{ATTIC}/{stamp} was restored already, at {manifest['restored_at']}")
    todo = plan_restore(root, stamp, manifest)
    restored = []
    for item in todo:
        if progress:
            progress(item["original"])
        move(root, item["stored"], item["original"])
        restored.append(item["original"])
    mismatches = verify_files(root, manifest)
    manifest["restored_at"] = now.isoformat()
    manifest["restore_mismatches"] = mismatches
    write_manifest(root, stamp, manifest)
    remove_empty_folders(root, stamp)
    return {
        "stamp": stamp,
        "restored": restored,
        "files_verified": len(manifest.get("files") or []) - len(mismatches),
        "mismatches": mismatches,
    }


# --- forensic copies ----------------------------------------------------------------------------------


def copy_tree(root: Path, source: str, destination: str) -> list[dict]:
    """Copy root/source (a folder) to root/destination (new), files with their mtimes, symlinks as symlinks
    (never followed); the files copied, with sha256."""
    src = root / source
    if not inside(src.resolve(), root) or src.is_symlink() or not src.is_dir():
        raise Refused(f"{source}: not a real folder inside the managed root")
    dst = root / destination
    if os.path.lexists(dst):
        raise Refused(f"{destination}: exists already")
    with open_dir(root, destination.split("/")[:-1], create=True):
        pass  # the parents, made without following a symlink
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return files_of(root, destination, destination, with_hash=True)
