"""`manage.py vx11 power`: status, check-windows."""

import json
import sys
from io import StringIO

from django.core.management import call_command

from apps.power.models import ServiceControl


def run(*args) -> str:
    out = StringIO()
    call_command("vx11_power", *args, stdout=out)
    return out.getvalue()


def test_status_and_check_windows(power_on, fleet):
    hermes = fleet["hermes"]
    argv = [sys.executable, "-m", "apps.simfleet.serve_one", "hermes", "--port", str(hermes.port)]
    ServiceControl.objects.create(module=hermes, backend=ServiceControl.Backend.PROCESS, command=argv)
    status = json.loads(run("status", "--json"))
    assert {s["service"]: s["backend"] for s in status["services"]}["hermes"] == "process"
    assert "stopped" in run("status")
    assert json.loads(run("check-windows", "--json")) == []
