"""Helpers of the power tests: recording stand-in executables, a JSON POST, is a module serving, timestamps."""

import json
import stat
import sys
from datetime import datetime

import httpx

POWER_KEY = "power-key-789"  # VX11_POWER_KEY of the fleet_token fixture


class StandIn:
    """`replies`: {last argument: (stdout, exit code)} for calls whose answer matters (default: a line, `exit_code`)."""

    def __init__(self, folder, name, exit_code, replies=None):
        self.record = folder / f"{name}.calls"
        self.path = folder / name
        self.path.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"open({str(self.record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
            f"replies = json.loads({json.dumps(replies or {})!r})\n"
            f"if sys.argv[-1] in replies:\n"
            f"    sys.stdout.write(replies[sys.argv[-1]][0])\n"
            f"    sys.exit(replies[sys.argv[-1]][1])\n"
            f"print('stand-in {name} ran', *sys.argv[1:])\n"
            f"sys.exit({exit_code})\n"
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[list[str]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


def slow(stand_in: StandIn, seconds: float) -> StandIn:
    """Make a stand-in take `seconds` before it answers (a slow `docker compose`)."""
    stand_in.path.write_text(
        stand_in.path.read_text().replace("import json, sys", f"import json, sys, time; time.sleep({seconds})")
    )
    return stand_in


def post(client, path, body=None):
    return client.post(path, body or {}, content_type="application/json")


def serving(url: str) -> bool:
    """Whether a module's /health answers 200 (asked directly, not through the portal's code)."""
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def offset_time(text: str) -> datetime:
    """An answer's timestamp: ISO 8601 with an offset (never naive, never "+00:00Z")."""
    assert not text.endswith("Z"), text
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None, text
    return moment
