"""A daughter's life, run inline (Celery eager) on the test database: finish, fail with retries,
duplicate delivery, cancel, kinds (http against the demo fleet, allow-listed commands)."""

import time

import pytest
from django.core.exceptions import ValidationError

from apps.daughters.models import Daughter, DaughterAttempt, DaughterTask
from apps.events.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def eager(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.VX11_DAUGHTER_HEARTBEAT_SECONDS = 0.05


def test_a_spawned_daughter_runs_and_finishes():
    task = DaughterTask.spawn("sleep", {"seconds": 0.2}, source="madre", description="drill")
    daughter = task.daughters.get()
    daughter.refresh_from_db()
    task.refresh_from_db()
    assert (daughter.status, task.status) == ("finished", "completed")
    assert daughter.result == {"slept": 0.2}
    assert daughter.started_at <= daughter.last_heartbeat_at <= daughter.ended_at  # it heartbeat while sleeping
    assert (daughter.expires_at - daughter.started_at).total_seconds() == 300
    assert list(daughter.attempts.values_list("attempt_number", "status")) == [(1, "success")]
    statuses = [
        e.data.get("status") for e in Event.objects.filter(type="status_changed", data__daughter_id=daughter.pk)
    ]
    assert statuses == ["running", "finished"]
    assert Event.objects.filter(type="plan_updated", data__task_id=task.pk, data__status="completed").exists()


def test_a_failing_daughter_is_retried_then_failed():
    task = DaughterTask.spawn("sleep", {"seconds": 0, "fail": True}, max_retries=2)
    daughter = task.daughters.get()
    daughter.refresh_from_db()
    task.refresh_from_db()
    assert (daughter.status, daughter.mutation_level, task.status) == ("failed", 2, "failed")
    assert "failed on purpose" in daughter.error_last
    assert list(daughter.attempts.values_list("attempt_number", "status")) == [(1, "error"), (2, "error"), (3, "error")]
    seen = list(
        Event.objects.filter(type="status_changed", data__daughter_id=daughter.pk).values_list(
            "data__status", flat=True
        )
    )
    assert seen == ["running", "mutated", "running", "mutated", "running", "failed"]


def test_no_retries_means_one_attempt():
    daughter = DaughterTask.spawn("sleep", {"fail": True}, max_retries=0).daughters.get()
    daughter.refresh_from_db()
    assert (daughter.status, daughter.attempts.count()) == ("failed", 1)


def test_a_second_delivery_of_the_same_attempt_does_nothing():
    daughter = DaughterTask.spawn("sleep", {"seconds": 0}).daughters.get()
    assert "not claimed" in Daughter.run(daughter.pk, 0)
    assert DaughterAttempt.objects.filter(daughter=daughter).count() == 1


def test_http_kind_calls_the_module(fleet):
    ok = DaughterTask.spawn("http", {"module": "hermes", "path": "/tools"}).daughters.get()
    ok.refresh_from_db()
    assert ok.status == "finished"
    assert ok.result["status_code"] == 200
    assert "tools" in ok.result["body"]


def test_http_kind_fails_on_an_unexpected_status(fleet, sim):
    sim.set_mode("hermes", "error")
    bad = DaughterTask.spawn("http", {"module": "hermes", "path": "/health"}, max_retries=0).daughters.get()
    bad.refresh_from_db()
    assert bad.status == "failed"
    assert "answered 500, expected 200" in bad.error_last


def test_a_command_timeout_kills_the_whole_process_group(settings):
    """A grandchild holding the output pipe neither outlives the timeout nor keeps the worker waiting."""
    settings.VX11_DAUGHTER_COMMANDS = {**settings.VX11_DAUGHTER_COMMANDS, "grandchild": ["sh", "-c", "sleep 6 & wait"]}
    started = time.monotonic()
    daughter = DaughterTask.spawn("command", {"command": "grandchild", "timeout": 0.5}, max_retries=0).daughters.get()
    daughter.refresh_from_db()
    assert daughter.status == "failed"
    assert "timed out after 0.5 s" in daughter.error_last
    assert time.monotonic() - started < 4


def test_command_kind_runs_an_allow_listed_argument_list():
    ok = DaughterTask.spawn("command", {"command": "true"}).daughters.get()
    bad = DaughterTask.spawn("command", {"command": "false"}, max_retries=0).daughters.get()
    slow = DaughterTask.spawn(
        "command", {"command": "sleep", "args": ["5"], "timeout": 0.3}, max_retries=0
    ).daughters.get()
    for d in (ok, bad, slow):
        d.refresh_from_db()
    assert ok.status == "finished"
    assert ok.result["exit_code"] == 0
    assert bad.status == "failed"
    assert "exited with 1" in bad.error_last
    assert slow.status == "failed"
    assert "timed out after 0.3 s" in slow.error_last
    assert slow.attempts.get().status == "timeout"


@pytest.mark.parametrize(
    "kind,params,message",
    [
        ("teleport", {}, "unknown kind 'teleport'"),
        ("command", {"command": "rm", "args": ["-rf", "/"]}, "not in the allow-list"),
        ("command", {"command": "true", "args": "not-a-list"}, "args must be a list of strings"),
        ("command", {"command": "true", "shell": True}, "unknown command params: shell"),
        ("http", {"module": "nope"}, "module 'nope' is not in the fleet"),
        ("sleep", {"seconds": -1}, "seconds must be a number"),
        ("sleep", {"seconds": 1, "timeout": "soon"}, "unknown sleep params: timeout"),
    ],
)
def test_bad_spawns_are_refused_and_store_nothing(kind, params, message):
    with pytest.raises(ValidationError, match=message):
        DaughterTask.spawn(kind, params)
    assert not DaughterTask.objects.exists()
