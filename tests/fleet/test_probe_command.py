"""`python manage.py vx11 probe`: table with a progress bar, or --json; non-zero exit if a core module is down."""

import json
import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.helpers import ROOT

pytestmark = pytest.mark.django_db


def test_json_output_has_one_object_per_module(fleet, capsys):
    call_command("vx11_probe", json=True)
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 10
    assert {"slug", "state", "status_code", "latency_ms", "error"} <= set(rows[0])
    assert {r["slug"]: r["state"] for r in rows}["madre"] == "up"


def test_core_module_down_exits_non_zero(fleet, sim, capsys):
    sim.set_mode("spawner", "down")
    with pytest.raises(SystemExit) as exit_info:
        call_command("vx11_probe", json=True)
    assert exit_info.value.code == 1
    rows = {r["slug"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["spawner"]["error"] == "connection refused"


def test_non_core_module_down_exits_zero(fleet, sim, capsys):
    sim.set_mode("hermes", "down")
    call_command("vx11_probe")
    out = capsys.readouterr().out
    assert "hermes" in out
    assert "connection refused" in out


def test_unknown_module_is_a_clear_error(fleet):
    with pytest.raises(CommandError, match="unknown module"):
        call_command("vx11_probe", "nope")


def test_dispatcher_lists_verbs_and_refuses_unknown_ones():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "vx11_site.settings"}
    out = subprocess.run(
        [sys.executable, "manage.py", "vx11"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert "probe" in out.stdout
    assert "demo" in out.stdout
    bad = subprocess.run(
        [sys.executable, "manage.py", "vx11", "fly"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "unknown verb 'fly'" in bad.stderr
    assert "Traceback" not in bad.stderr
