"""`manage.py vx11 power`: status, check-windows, demo-controls."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.power.models import ServiceControl


def run(*args) -> str:
    out = StringIO()
    call_command("vx11_power", *args, stdout=out)
    return out.getvalue()


def test_status_and_demo_controls(power_on, fleet):
    assert "switch" in run("demo-controls", "switch", "hermes")
    control = ServiceControl.objects.get(module__slug="switch")
    assert control.backend == "process" and control.command[-4:] == [
        "apps.simfleet.serve_one",
        "switch",
        "--port",
        str(fleet["switch"].port),
    ]
    status = json.loads(run("status", "--json"))
    assert {s["service"]: s["backend"] for s in status["services"]}["hermes"] == "process"
    assert "stopped" in run("status")
    assert json.loads(run("check-windows", "--json")) == []
    with pytest.raises(CommandError, match="ghost"):
        run("demo-controls", "ghost")
