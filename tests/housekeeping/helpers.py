"""Helpers of the housekeeping tests: a tree's exact state (to prove nothing moved, or everything came back),
the permissions of a housekeeper."""

import hashlib
import os
from pathlib import Path

ALL_PERMISSIONS = (
    "housekeeping.add_housekeepingrun",
    "housekeeping.apply_housekeeping",
    "housekeeping.restore_housekeeping",
)


def snapshot(root: Path, skip: tuple[str, ...] = (".git",)) -> dict[str, tuple]:
    """Every entry under `root` (not following symlinks) -> (kind, size, sha256 or link target, mtime in ns);
    folders -> ("dir",). Top-level names in `skip` are left out."""
    state: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        if here == root:
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        for name in dirs:
            path = here / name
            key = path.relative_to(root).as_posix()
            state[key] = ("link", os.readlink(path)) if path.is_symlink() else ("dir",)
        for name in files:
            path = here / name
            info = path.lstat()
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[key] = ("link", os.readlink(path), info.st_mtime_ns)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                state[key] = ("file", info.st_size, digest, info.st_mtime_ns)
    return state


def write(root: Path, relative: str, content: str | bytes = "x\n") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path
