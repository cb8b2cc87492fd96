"""The guards every housekeeping move passes first: confinement to the managed root, the forensic rule and
the protected-paths list (CLEANUP_EXCLUDES_CORE.txt).

- `confine(root, relative)`: a relative POSIX path is resolved inside the root, or refused: an absolute path,
  a `..` component, a parent that is a symlink leading out of the root, a path that is itself a symlink pointing
  out of it. What comes back is the path with its parents' symlinks resolved (the path the move really touches).
- `forensic/`: a path with a component named `forensic` (any case), given or resolved, is refused, whatever the
  configuration says: crash evidence is never moved; it may only be copied (runner.archive_forensic).
- `load_excludes(root)`: the protected-paths list, loaded before anything moves: VX11_CLEANUP_EXCLUDES when set,
  else <root>/docs/audit/CLEANUP_EXCLUDES_CORE.txt, else the real VX11 list (BUILTIN_EXCLUDES). Entries match by
  whole path components: `switch/` protects `switch` and `switch/x`, never `switchboard/`; a candidate that
  contains a protected path (moving `data` would move `data/runtime/`) is protected too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

FORENSIC = "forensic"
EXCLUDES_NAME = "CLEANUP_EXCLUDES_CORE.txt"
# VX11's own CLEANUP_EXCLUDES_CORE.txt: what applies when the managed tree has none
BUILTIN_EXCLUDES = (
    "vx11.code-workspace",
    ".github/agents/",
    ".github/instructions/",
    ".github/copilot-instructions.md",
    "AGENTS.md",
    ".vscode/",
    "docs/audit/DB_MAP_v7_FINAL.md",
    "docs/audit/DB_SCHEMA_v7_FINAL.json",
    "docs/audit/DB_MAP_v7_META.txt",
    "docs/audit/DBMAP_MAINTENANCE.md",
    "sitecustomize.py",
    "docker-compose.yml",
    "data/runtime/",
    "switch/",
    "switch/hermes/",
    "tentaculo_link/",
    "madre/",
    "mcp/",
)


class Refused(Exception):
    """A path the guards will not let a move touch; the message says why."""


class ExcludesError(Exception):
    """The protected-paths list could not be loaded: nothing may move."""


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def split(relative: str) -> tuple[str, ...]:
    """The components of a relative POSIX path, refused when absolute, with `..`, empty or malformed."""
    if not isinstance(relative, str) or not relative.strip():
        raise Refused("an empty path")
    if "\x00" in relative:
        raise Refused(f"a NUL character in the path {relative!r}")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("\\") or (len(relative) > 1 and relative[1] == ":"):
        raise Refused(f"{relative}: an absolute path (paths are relative to the managed root)")
    parts = tuple(part for part in pure.parts if part not in ("", "."))
    if ".." in parts:
        raise Refused(f"{relative}: '..' in the path")
    if not parts:
        raise Refused(f"{relative}: the managed root itself")
    return parts


def forensic_part(parts) -> bool:
    return any(part.lower() == FORENSIC for part in parts)


def refuse_forensic(relative: str, parts) -> None:
    if forensic_part(parts):
        raise Refused(f"{relative}: under a forensic/ folder; crash evidence is never moved (only archived as a copy)")


@dataclass(frozen=True)
class Confined:
    """A path checked by confine(): `path` absolute with its parents' symlinks resolved, `relative` from the root."""

    path: Path
    relative: str

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.relative.split("/"))


def confine(root: Path, relative: str, *, must_exist: bool = True) -> Confined:
    """`relative` resolved inside the (resolved) `root`, or Refused (see the module's doc)."""
    parts = split(relative)
    refuse_forensic(relative, parts)
    parent = root.joinpath(*parts[:-1]).resolve()
    if not inside(parent, root):
        raise Refused(f"{relative}: leads outside the managed root (through a symlink)")
    path = parent / parts[-1]
    if path.is_symlink():
        target = path.resolve()
        if not inside(target, root):
            raise Refused(f"{relative}: a symlink pointing outside the managed root (to {target})")
    if must_exist and not os.path.lexists(path):
        raise Refused(f"{relative}: does not exist")
    if not must_exist and path == root:
        raise Refused(f"{relative}: the managed root itself")
    resolved = path.relative_to(root).as_posix()
    refuse_forensic(relative, resolved.split("/"))
    return Confined(path=path, relative=resolved)


def check_contents(root: Path, confined: Confined) -> None:
    """A folder about to move holds no forensic/ folder and no symlink pointing out of the root."""
    if not confined.path.is_dir() or confined.path.is_symlink():
        return
    for folder, dirs, files in os.walk(confined.path, followlinks=False):
        here = Path(folder)
        for name in dirs + files:
            entry = here / name
            relative = entry.relative_to(root).as_posix()
            if name.lower() == FORENSIC:
                raise Refused(f"{confined.relative}: holds a forensic/ folder ({relative}); it is never moved")
            if entry.is_symlink() and not inside(entry.resolve(), root):
                raise Refused(f"{confined.relative}: holds a symlink pointing outside the managed root ({relative})")


@dataclass(frozen=True)
class Excludes:
    """The protected paths, each as its components, and where they came from."""

    entries: tuple[str, ...]  # as written in the list (`switch/`), one path each
    source: str
    ignored: tuple[str, ...] = ()

    def protecting(self, relative: str) -> str | None:
        """The entry that protects `relative` (it is, is inside, or contains that entry), or None."""
        parts = tuple(relative.split("/"))
        for entry in self.entries:
            protected = split(entry)
            shorter = min(len(parts), len(protected))
            if parts[:shorter] == protected[:shorter]:
                return entry
        return None


def parse_excludes(text: str, root: Path) -> tuple[list[str], list[str]]:
    """The entries of an excludes file (one path a line; blank lines and `#` comments skipped), normalised to
    relative POSIX paths (a trailing slash kept, for the reader), and the lines that cannot name a path in the root."""
    entries: list[str] = []
    ignored: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        candidate = line
        if candidate.startswith("/"):
            absolute = Path(candidate)
            if not inside(absolute, root) or absolute == root:
                ignored.append(line)
                continue
            candidate = absolute.relative_to(root).as_posix()
        try:
            parts = split(candidate)
        except Refused:
            ignored.append(line)
            continue
        entry = "/".join(parts) + ("/" if candidate.endswith("/") else "")
        if entry not in entries:
            entries.append(entry)
    return entries, ignored


def load_excludes(root: Path) -> Excludes:
    """The protected-paths list for `root` (see the module's doc); ExcludesError when a list that should be there
    cannot be read, names nothing, or lies outside the managed root."""
    configured = settings.VX11_CLEANUP_EXCLUDES
    if configured:
        path = Path(configured)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ExcludesError(f"VX11_CLEANUP_EXCLUDES={configured} cannot be read: {exc}") from None
        source = str(path)
    else:
        path = root / "docs" / "audit" / EXCLUDES_NAME
        if not os.path.lexists(path):
            return Excludes(entries=BUILTIN_EXCLUDES, source="built-in (VX11's list)")
        if not inside(path.resolve(), root):
            raise ExcludesError(f"{path} is a symlink leading outside the managed root; not read")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ExcludesError(f"{path} cannot be read: {exc}") from None
        source = str(path)
    entries, ignored = parse_excludes(text, root)
    if not entries:
        raise ExcludesError(f"{source} lists no path; housekeeping does not run without its protected paths")
    return Excludes(entries=tuple(entries), source=source, ignored=tuple(ignored))
