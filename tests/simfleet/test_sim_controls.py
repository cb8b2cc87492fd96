"""`manage.py vx11 sim controls SLUG...`: demo modules get the power manager's process backend (serve_one)."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.power.models import ServiceControl


def run(*args) -> str:
    out = StringIO()
    call_command("vx11_sim", *args, stdout=out)
    return out.getvalue()


def test_controls_give_demo_modules_the_process_backend(fleet):
    assert "switch" in run("controls", "switch", "hermes")
    control = ServiceControl.objects.get(module__slug="switch")
    assert control.backend == "process"
    assert control.command[-4:] == [
        "apps.simfleet.serve_one",
        "switch",
        "--port",
        str(fleet["switch"].port),
    ]
    assert ServiceControl.objects.get(module__slug="hermes").backend == "process"
    with pytest.raises(CommandError, match="ghost"):
        run("controls", "ghost")


def test_controls_need_a_module(db):
    with pytest.raises(CommandError, match="name the module"):
        run("controls")
