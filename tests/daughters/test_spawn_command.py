"""`vx11 spawn`: spawn, wait with the worker's work done inline (eager), JSON out, clear errors."""

import json

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def cli_as_admin(admin_user, settings):
    """The CLI acts as a portal user: VX11_CLI_USER here (--as USER on a command line)."""
    settings.VX11_CLI_USER = admin_user.username


def test_spawn_and_wait_prints_json(settings, capsys):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    call_command("vx11_spawn", "sleep", "seconds:=0.1", "--wait", "--json")
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "completed"
    assert out["daughters"][0]["result"] == {"slept": 0.1}


def test_a_failed_task_exits_1(settings, capsys):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with pytest.raises(SystemExit) as exit_:
        call_command("vx11_spawn", "command", "command=false", "--max-retries", "0", "--wait")
    assert exit_.value.code == 1
    assert "ended failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["teleport"], "unknown kind"),
        (["sleep", "seconds"], "not key=value"),
        (["sleep", "seconds:=soon"], "'soon' is not JSON"),
        (["sleep", "seconds=1"], "seconds must be a number"),
        (["sleep", "--params-json", "{oops"], "--params-json is not JSON"),
        (["command", "command=rm"], "not in the allow-list"),
    ],
)
def test_bad_input_is_one_error_line(argv, message):
    with pytest.raises(CommandError, match=message):
        call_command("vx11_spawn", *argv)
