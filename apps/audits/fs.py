"""The managed VX11 tree's order: which canonical folders are there, what else is, and stray generated files.

`check_fs(root, allowed_roots)` is a plain function: the audits runner reports it (Orden_fs_pct) and housekeeping
takes its stray files as candidates. It only reads names and sizes, never a file's content, and it never follows
a symlink: a link is listed as itself and not walked, so nothing outside the root is looked at.

Orden_fs_pct = allowed roots present ÷ (allowed roots + extra top-level folders) × 100, as VX11's order auditor
computed it:
- an allowed root names a top-level folder (`madre`) or a nested one (`switch/hermes`); it is present when it is a
  real folder (a symlink does not count: it may point anywhere);
- an extra is a top-level folder (or a symlink) that no allowed root starts with and that is not ignored
  (IGNORED_ROOTS: `.git`, virtualenvs, editor and tool caches); top-level files (README.md, docker-compose.yml) do
  not count, as they did not for VX11;
- "NV" with the reason when the root is missing, not a folder, empty, or no root is allowed.
Stray generated files: `*_openapi.json` and `functional_flow_results.json` files and `__pycache__` folders anywhere
under the root, except inside SKIPPED_DIRS (`.git`, `attic/`, where housekeeping already put things away, and
virtualenvs).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# top-level folders that are neither allowed nor extra: version control, virtualenvs, editor and tool caches
IGNORED_ROOTS = frozenset(
    {
        ".git",
        ".venv",
        "venv",
        "node_modules",
        ".vscode",
        ".devcontainer",
        ".copilot-audit",
        ".backups",
        ".tmp",
        ".tmp_copilot",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
    }
)
# folders (relative to the root) never searched for stray files
SKIPPED_DIRS = frozenset({".git", "attic", ".venv", "venv", "node_modules"})
PYCACHE = "__pycache__"
FLOW_RESULTS = "functional_flow_results.json"
OPENAPI_SUFFIX = "_openapi.json"


def stray_kind(name: str, is_dir: bool) -> str | None:
    """Which kind of generated leftover a directory entry is, or None."""
    if is_dir:
        return "pycache" if name == PYCACHE else None
    if name == FLOW_RESULTS:
        return "flow_results"
    if name.endswith(OPENAPI_SUFFIX):
        return "openapi"
    return None


def tree_bytes(path: Path) -> int:
    """Bytes of the files under a folder, symlinks counted as links (never followed)."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue  # unreadable: counted as what could be read
    return total


def find_strays(root: Path) -> tuple[list[dict], list[str]]:
    """Stray generated files under `root` (relative POSIX paths, sorted) and the folders that could not be read."""
    strays: list[dict] = []
    unreadable: list[str] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            unreadable.append(folder.relative_to(root).as_posix())
            continue
        for entry in entries:
            path = Path(entry.path)
            relative = path.relative_to(root).as_posix()
            is_link = entry.is_symlink()
            is_dir = entry.is_dir(follow_symlinks=False)
            kind = stray_kind(entry.name, is_dir or (is_link and entry.name == PYCACHE))
            if kind is not None:
                size = tree_bytes(path) if is_dir else entry.stat(follow_symlinks=False).st_size
                strays.append({"path": relative, "kind": kind, "bytes": size, "symlink": is_link})
            elif is_dir and relative not in SKIPPED_DIRS:
                stack.append(path)
    strays.sort(key=lambda s: s["path"])
    return strays, sorted(unreadable)


def real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def nv(result: dict, reason: str) -> dict:
    result.update({"Orden_fs_pct": "NV", "reason": reason, "findings": [reason]})
    return result


def check_fs(root: Path, allowed_roots: list[str]) -> dict:
    """Orden_fs_pct and its inputs, and the stray generated files of the tree at `root` (see the module's doc)."""
    root = Path(root)
    allowed = sorted({r.strip().strip("/") for r in allowed_roots if r and r.strip().strip("/")})
    result: dict = {
        "root": str(root),
        "Orden_fs_pct": "NV",
        "reason": "",
        "calculation": "allowed roots present ÷ (allowed roots + extra top-level folders) × 100",
        "allowed_roots": allowed,
        "present_roots": [],
        "missing_roots": [],
        "extra_roots": [],
        "ignored_roots": [],
        "top_level_files": [],
        "stray_files": [],
        "unreadable": [],
        "counts": {"allowed": len(allowed), "present": 0, "missing": 0, "extra": 0, "stray": 0},
        "findings": [],
    }
    if not root.exists() and not root.is_symlink():
        return nv(result, f"the managed root {root} does not exist")
    if not real_dir(root):
        return nv(result, f"the managed root {root} is not a folder (or is a symlink)")
    try:
        with os.scandir(root) as it:
            top = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return nv(result, f"the managed root {root} cannot be read: {exc.strerror}")
    if not top:
        return nv(result, f"the managed root {root} is empty")
    if not allowed:
        return nv(result, "no allowed roots are configured (VX11_FS_ALLOWED_ROOTS)")
    first_parts = {r.split("/", 1)[0] for r in allowed}
    for entry in top:
        if entry.is_dir(follow_symlinks=False) or entry.is_symlink():
            if entry.name in IGNORED_ROOTS:
                result["ignored_roots"].append(entry.name)
            elif entry.name not in first_parts:
                result["extra_roots"].append(entry.name)
        else:
            result["top_level_files"].append(entry.name)
    for name in allowed:
        (result["present_roots"] if real_dir(root / name) else result["missing_roots"]).append(name)
    strays, unreadable = find_strays(root)
    counts = result["counts"]
    counts.update(
        present=len(result["present_roots"]),
        missing=len(result["missing_roots"]),
        extra=len(result["extra_roots"]),
        stray=len(strays),
    )
    considered = counts["allowed"] + counts["extra"]
    result["Orden_fs_pct"] = round(100.0 * counts["present"] / considered, 2)
    result["calculation"] = (
        f"{counts['present']} present ÷ ({counts['allowed']} allowed + {counts['extra']} extra) × 100 "
        f"= {result['Orden_fs_pct']}"
    )
    result["stray_files"] = strays
    result["unreadable"] = unreadable
    findings = result["findings"]
    if result["missing_roots"]:
        findings.append(f"missing canonical folders: {', '.join(result['missing_roots'])}")
    if result["extra_roots"]:
        findings.append(f"extra top-level folders: {', '.join(result['extra_roots'])}")
    if strays:
        findings.append(f"{len(strays)} stray generated file(s): {', '.join(s['path'] for s in strays[:10])}")
    if unreadable:
        findings.append(f"unreadable folders: {', '.join(unreadable[:10])}")
    return result
