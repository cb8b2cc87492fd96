"""The event bus: validation, the envelope, storage for replay, pruning by age."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.events.models import CANONICAL_TYPES, Event, publish
from apps.events.tasks import prune_events

pytestmark = pytest.mark.django_db


def test_six_canonical_types():
    assert CANONICAL_TYPES == (
        "message_received",
        "tool_call_requested",
        "tool_result_received",
        "plan_updated",
        "status_changed",
        "error_reported",
    )


def test_envelope_shape_and_storage():
    env = publish("tool_result_received", {"tool": "x", "ok": True}, session_id="s-1")
    assert set(env) == {"type", "session_id", "timestamp", "data", "cursor"}
    assert env["type"] == "tool_result_received"
    assert env["session_id"] == "s-1"
    assert env["timestamp"].endswith("Z")
    stored = Event.objects.get(id=env["cursor"])
    assert stored.data == {"tool": "x", "ok": True}
    assert publish("status_changed", {})["session_id"] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"event_type": "nope"}, "unknown event type"),
        ({"event_type": "plan_updated", "session_id": "a b"}, "invalid session id"),
    ],
)
def test_bad_input_is_refused_and_nothing_stored(kwargs, message):
    with pytest.raises(ValueError, match=message):
        publish(**kwargs)
    assert not Event.objects.exists()


@override_settings(VX11_EVENT_RETENTION_HOURS=1, VX11_PRUNE_CHUNK=3)
def test_prune_by_age_in_chunks():
    now = timezone.now()
    Event.objects.bulk_create(
        [Event(type="plan_updated", timestamp=now - timedelta(minutes=10 * i)) for i in range(12)]
    )
    assert prune_events() == 6  # 60..110 minutes old (the cut-off is taken a moment after `now`)
    assert Event.objects.count() == 6
    assert PeriodicTask.objects.filter(task="apps.events.tasks.prune_events").exists()


def test_fleet_state_changes_are_announced(fleet, sim, django_capture_on_commit_callbacks):
    from apps.fleet.probe import run_round

    with django_capture_on_commit_callbacks(execute=True):
        run_round()
    events = Event.objects.filter(type="status_changed")
    assert events.count() == 10
    assert {e.data["module"] for e in events} == set(fleet)
    assert all(e.data["from"] == "unknown" and e.data["to"] == "up" for e in events)
