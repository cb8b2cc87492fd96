"""What a running `vx11 demo` records in var/demo.json, so commands run from another shell find it.

The demo moves its ports with --port-offset and turns service control on for its own processes only;
`vx11 sim` and `vx11 power status` read this record instead of guessing the defaults.
"""

import json
import os
from pathlib import Path

from django.conf import settings


def path() -> Path:
    return settings.VAR_DIR / "demo.json"


def record(fields: dict) -> None:
    """Write the record whole (a reader never sees half of it): a temporary file, then a rename."""
    target = path()
    scratch = target.with_suffix(".json.tmp")
    scratch.write_text(json.dumps({"pid": os.getpid(), **fields}, indent=2))
    os.replace(scratch, target)


def current() -> dict | None:
    """The record of a demo that still runs; None when there is none, it cannot be read, or its process is gone."""
    try:
        data = json.loads(path().read_text())
        pid = int(data["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and b"demo" not in cmdline.read_bytes():
        return None  # the demo died and its pid now belongs to another program
    return data


def forget() -> None:
    """Remove the record, if it is this process's own."""
    try:
        if json.loads(path().read_text()).get("pid") == os.getpid():
            path().unlink()
    except (OSError, ValueError, AttributeError):
        pass
