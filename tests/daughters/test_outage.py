"""A Redis outage costs a spawn nothing: with the channel layer and the Celery broker both refusing
connections (channels-redis and kombu pointed at a port where nothing listens), POST /api/daughters
stores the task with its event and answers 201 at once; the daughters wait in the table for the next
dispatch, so a client has no reason to retry and nothing is duplicated."""

import time

import pytest

from apps.daughters.models import Daughter, DaughterTask
from apps.events.models import Event
from tests.helpers import celery_sends_to, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_spawn_during_a_redis_outage_answers_201_and_its_daughters_wait(api, dead_channel_layer):
    with celery_sends_to(f"redis://127.0.0.1:{free_port()}/0", "nowhere"):
        started = time.monotonic()
        response = api.post("/api/daughters", {"kind": "sleep"}, content_type="application/json")
        took = time.monotonic() - started
    assert response.status_code == 201, response.content
    task = DaughterTask.objects.get()
    daughter = task.daughters.get()
    assert (response.json()["id"], daughter.status, daughter.dispatched_at) == (task.pk, "spawned", None)
    assert Event.objects.filter(type="plan_updated", data__task_id=task.pk, sent_at__isnull=True).exists()
    assert took < 10, f"the spawn took {took:.1f} s"
    assert Daughter.dispatch() == 1  # the broker answers again: the next dispatch (a spawn, the reaper) hands it over
    daughter.refresh_from_db()
    assert daughter.dispatched_at is not None
