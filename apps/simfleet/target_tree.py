"""The demo's managed tree: a small VX11 checkout for the filesystem and git checks and for housekeeping.

`create_target_tree(root)` makes, in an empty or missing folder:
- the canonical top-level folders (VX11_FS_ALLOWED_ROOTS, switch/hermes included), each with a small file, the
  root files VX11 protects (AGENTS.md, docker-compose.yml, sitecustomize.py, vx11.code-workspace, .github/...),
  and one extra top-level folder (tmp_exports/), so Orden_fs_pct is not a trivial 100;
- forensic/crashes/ with a crash log (housekeeping never moves it);
- stray generated files: operator_openapi.json and functional_flow_results.json at the top,
  spawner/spawner_openapi.json and hormiguero/__pycache__/ (none inside a protected folder, so a run applies);
- data/backups/ with 4 backups a day apart by mtime (rotation keeps the 2 newest);
- docs/audit/ with an audit folder 30 days old (moved to the attic), one a day old (kept) and
  CLEANUP_EXCLUDES_CORE.txt with VX11's real list;
- a git repository with one commit (the git CLI as argument lists, with a timeout, confined to the tree), when git
  is installed.
It refuses a folder that already holds something: it never writes into a real checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

GIT_TIMEOUT = 30
EXTRA_ROOT = "tmp_exports"
STRAYS = (
    "functional_flow_results.json",
    "hormiguero/__pycache__",
    "operator_openapi.json",
    "spawner/spawner_openapi.json",
)
STAMP = "%Y%m%dT%H%M%SZ"
EXCLUDES = """\
# CLEANUP_EXCLUDES_CORE.txt: paths housekeeping never moves (one a line, matched by whole path components)
vx11.code-workspace
.github/agents/
.github/instructions/
.github/copilot-instructions.md
AGENTS.md
.vscode/
docs/audit/DB_MAP_v7_FINAL.md
docs/audit/DB_SCHEMA_v7_FINAL.json
docs/audit/DB_MAP_v7_META.txt
docs/audit/DBMAP_MAINTENANCE.md
sitecustomize.py
docker-compose.yml
data/runtime/
switch/
switch/hermes/
tentaculo_link/
madre/
mcp/
"""
MODULE_FILES = {
    "tentaculo_link": "main.py",
    "madre": "main.py",
    "switch": "main.py",
    "switch/hermes": "main.py",
    "hormiguero": "queen.py",
    "manifestator": "main.py",
    "shubniggurath": "main.py",
    "spawner": "main.py",
    "mcp": "main.py",
    "operator": "README.md",
    "operator_backend": "main.py",
}


def module_source(folder: str) -> str:
    name = folder.rsplit("/", 1)[-1]
    return f'"""{name}: demo stand-in of the VX11 module."""\n\nMODULE = "{name}"\n'


def files_of_tree(now: datetime) -> dict[str, str | bytes]:
    """Relative path -> content of every file of the demo tree (folders follow from the paths)."""
    files: dict[str, str | bytes] = {}
    for folder in settings.VX11_FS_ALLOWED_ROOTS:
        name = MODULE_FILES.get(folder, "README.md")
        files[f"{folder}/{name}"] = (
            module_source(folder) if name.endswith(".py") else f"# {folder}\n\nPart of the demo VX11 checkout.\n"
        )
    crash = (now - timedelta(days=3)).strftime(STAMP)
    old_audit = (now - timedelta(days=30)).strftime(STAMP)
    recent_audit = (now - timedelta(days=1)).strftime(STAMP)
    files.update(
        {
            "README.md": "# VX11 (demo checkout)\n\nMade by `vx11 demo` for the portal's audits and housekeeping.\n",
            "AGENTS.md": "# Agents\n\nProtected by CLEANUP_EXCLUDES_CORE.txt.\n",
            "docker-compose.yml": "services:\n  tentaculo_link:\n    ports: ['8000:8000']\n"
            "  madre:\n    ports: ['8001:8001']\n",
            "sitecustomize.py": "# VX11 path set-up (demo)\n",
            "vx11.code-workspace": '{"folders": [{"path": "."}]}\n',
            ".gitignore": "__pycache__/\ndata/runtime/\ndata/backups/\n",
            ".github/agents/vx11.agent.md": "# vx11 agent\n",
            ".github/instructions/vx11_global.instructions.md": "# global instructions\n",
            ".github/copilot-instructions.md": "# copilot instructions\n",
            "config/vx11.env.example": "VX11_TOKEN=change-me\n",
            "data/runtime/.keep": "",
            "docs/audit/CLEANUP_EXCLUDES_CORE.txt": EXCLUDES,
            f"docs/audit/{old_audit}_phase1_audit/REPORT.md": "# phase 1 audit (a month old)\n",
            f"docs/audit/{old_audit}_phase1_audit/counts.json": '{"tables": 65}\n',
            f"docs/audit/{recent_audit}_phase1_audit/REPORT.md": "# phase 1 audit (yesterday)\n",
            f"forensic/crashes/crash_{crash}.log": "Traceback (most recent call last):\n  madre: worker died\n",
            f"{EXTRA_ROOT}/export.csv": "module,status\nmadre,ok\n",
            # stray generated files
            "operator_openapi.json": '{"openapi": "3.1.0", "info": {"title": "operator"}}\n',
            "functional_flow_results.json": '{"flows": [], "overall_success": false}\n',
            "spawner/spawner_openapi.json": '{"openapi": "3.1.0", "info": {"title": "spawner"}}\n',
            "hormiguero/__pycache__/queen.cpython-311.pyc": b"\xa7\r\r\n" + bytes(range(64)),
        }
    )
    return files


def backups(now: datetime) -> list[tuple[str, datetime]]:
    """The 4 backups of data/backups/ and their mtimes, a day apart (the newest yesterday)."""
    return [
        (f"data/backups/vx11_{(now - timedelta(days=d)):%Y%m%d}.db.bak", now - timedelta(days=d)) for d in (4, 3, 2, 1)
    ]


def git_commit(root: Path) -> dict:
    """`git init` and one commit of the whole tree; every call names the tree's own .git (GIT_DIR and
    GIT_WORK_TREE), so it can never reach a repository around it (the portal's own checkout holds var/)."""
    git = shutil.which("git")
    if git is None:
        return {"skipped": "git is not installed"}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "GIT_CEILING_DIRECTORIES": str(root.parent),
        "GIT_DIR": str(root / ".git"),
        "GIT_WORK_TREE": str(root),
        "GIT_AUTHOR_NAME": "VX11 demo",
        "GIT_AUTHOR_EMAIL": "demo@vx11.invalid",
        "GIT_COMMITTER_NAME": "VX11 demo",
        "GIT_COMMITTER_EMAIL": "demo@vx11.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(root),  # no global config: no hooks, signing or templates of the user's
    }
    steps = [
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-q", "--no-verify", "--no-gpg-sign", "-m", "VX11 demo checkout"],
        ["rev-parse", "HEAD"],
    ]
    out = ""
    for args in steps:
        try:
            proc = subprocess.run([git, *args], cwd=root, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT)
        except (subprocess.TimeoutExpired, OSError) as exc:
            return {"skipped": f"git {args[0]}: {exc}"}
        if proc.returncode != 0:
            return {"skipped": f"git {args[0]} failed: {proc.stderr.strip()[:300]}"}
        out = proc.stdout.strip()
    return {"commit": out}


def create_target_tree(root: Path, now: datetime | None = None, git: bool = True) -> dict:
    """Make the demo tree at `root` (see the module's doc); {root, folders, files, bytes, extra_root, strays,
    backups, git}. ValueError when `root` exists and is not an empty folder."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not an empty folder; the demo tree is made only where nothing is")
    now = now or timezone.now()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    files = files_of_tree(now)
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    made_backups = []
    for relative, mtime in backups(now):
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f"SQLite backup of {mtime:%Y-%m-%d}\n".encode() * 64)
        os.utime(target, ns=(int(mtime.timestamp() * 1e9), int(mtime.timestamp() * 1e9)))
        made_backups.append(relative)
    every = [p for p in root.rglob("*") if ".git" not in p.relative_to(root).parts]
    return {
        "root": str(root),
        "folders": sum(1 for p in every if p.is_dir()),
        "files": sum(1 for p in every if p.is_file()),
        "bytes": sum(p.stat().st_size for p in every if p.is_file()),
        "extra_root": EXTRA_ROOT,
        "strays": list(STRAYS),
        "backups": made_backups,
        "git": git_commit(root) if git else {"skipped": "not asked"},
    }
