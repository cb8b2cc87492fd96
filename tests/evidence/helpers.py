"""Bags to check and ways to tamper with them (plain functions; fixtures are in conftest.py)."""

import subprocess
import sys
from pathlib import Path

from apps.evidence.bags import write_bag

PAYLOAD = {"result.json": '{"ok": true}\n', "logs/run.log": "line 1\nline 2\n"}


def sample_bag(name: str = "db_audit", **kwargs):
    """A bag with two payload files (one in a subfolder) and the usual bag-info labels."""
    kwargs.setdefault("info", {"target": "var/vx11_target.db", "started_at": "2026-01-04T03:00:00+00:00"})
    kwargs.setdefault("run_id", "run-1")
    return write_bag(name, "audit", dict(PAYLOAD), **kwargs)


def bagit_cli(folder: Path) -> subprocess.CompletedProcess:
    """The bagit library's own command line, as a person would check a bag by hand."""
    return subprocess.run(
        [sys.executable, "-m", "bagit", "--validate", str(folder)], capture_output=True, text=True, timeout=60
    )


def modify(folder: Path) -> str:
    (folder / "data" / "result.json").write_text('{"ok": false}\n')
    return "data/result.json"


def delete(folder: Path) -> str:
    (folder / "data" / "logs" / "run.log").unlink()
    return "data/logs/run.log"


def add(folder: Path) -> str:
    (folder / "data" / "planted.txt").write_text("not part of the run\n")
    return "data/planted.txt"


TAMPERING = {"modified": modify, "missing": delete, "extra": add}
