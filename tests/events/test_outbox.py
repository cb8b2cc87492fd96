"""The outbox: an event is stored with the change it announces and sent after the commit; a channel layer
that fails (channels-redis pointed at a port where nothing listens) never fails the publisher, and the
relay sends what it could not once the layer answers; a client that reconnects gets it by replay."""

import asyncio
import importlib
import json
import os
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.apps import apps as django_apps
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.events.models import BROADCAST_GROUP, SEND_TIMEOUT, Event, apublish, publish, relay_unsent
from tests.helpers import channel_layer, redis_layer, redis_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def live_layer():
    """A working channels-redis layer on the real Redis, with keys of this test's own."""
    config = redis_layer(redis_url(), f"outbox{os.getpid()}x{time.monotonic_ns()}")
    with channel_layer(config) as layer:
        yield layer


def listen(layer, group: str = BROADCAST_GROUP) -> str:
    """A channel in `group`; a plain name (no "!"), read straight from Redis by any event loop."""
    channel = f"listener{time.monotonic_ns()}"
    async_to_sync(layer.group_add)(group, channel)
    return channel


def received(layer, channel: str, wait: float = 2) -> list[dict]:
    """The vx11.event messages the channel gets: the first within `wait` seconds, the rest 0.3 s apart."""

    async def drain():
        got = []
        timeout = wait
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout)
            except TimeoutError:
                return got
            got.append(message["event"])
            timeout = 0.3

    return async_to_sync(drain)()


def test_a_refused_send_costs_the_publisher_nothing_and_the_relay_sends_it_later(dead_channel_layer):
    started = time.monotonic()
    first = publish("status_changed", {"n": 1})
    second = publish("plan_updated", {"n": 2}, session_id="s1")
    assert time.monotonic() - started < SEND_TIMEOUT  # refused at once; the second did not even try
    stored = list(Event.objects.order_by("id").values_list("id", "sent_at"))
    assert stored == [(first["cursor"], None), (second["cursor"], None)]
    assert relay_unsent(now=timezone.now() + timedelta(minutes=1)) == {"sent": 0, "pending": 2}  # still down: kept

    config = redis_layer(redis_url(), f"outbox{os.getpid()}x{time.monotonic_ns()}")
    with channel_layer(config) as layer:
        everyone, s1 = listen(layer), listen(layer, "vx11.session.s1")
        assert relay_unsent() == {"sent": 0, "pending": 2}  # younger than the grace: their publisher may be sending
        assert relay_unsent(now=timezone.now() + timedelta(seconds=10)) == {"sent": 2, "pending": 0}
        assert received(layer, everyone) == [first]
        assert received(layer, s1) == [second]
        assert relay_unsent(now=timezone.now() + timedelta(seconds=10)) == {"sent": 0, "pending": 0}
    assert not Event.objects.filter(sent_at__isnull=True).exists()


@pytest.mark.django_db  # before any transactional test flushes the migrations' rows
def test_the_relay_runs_on_beat_and_events_stored_before_the_outbox_count_as_sent():
    entry = PeriodicTask.objects.get(name="events: relay unsent events")
    assert (entry.task, entry.interval.every, entry.interval.period) == ("apps.events.tasks.relay_events", 5, "seconds")
    old = Event.objects.create(type="status_changed", timestamp=timezone.now() - timedelta(hours=1))
    importlib.import_module("apps.events.migrations.0003_outbox").mark_existing_sent(django_apps, None)
    old.refresh_from_db()
    assert old.sent_at == old.timestamp  # an upgrade does not replay 72 hours of events to live clients


def test_apublish_with_a_refused_layer_stores_the_event_unsent(dead_channel_layer):
    envelope = async_to_sync(apublish)("message_received", {"message": "hi"}, "s1")
    assert Event.objects.get(id=envelope["cursor"]).sent_at is None


def test_a_sent_event_is_marked_and_never_relayed(live_layer):
    channel = listen(live_layer)
    envelope = publish("status_changed", {"module": "madre"})
    assert received(live_layer, channel) == [envelope]
    assert Event.objects.get().sent_at is not None
    assert relay_unsent(now=timezone.now() + timedelta(minutes=1)) == {"sent": 0, "pending": 0}


def test_the_event_is_stored_with_its_change_and_sent_after_the_commit(live_layer):
    channel = listen(live_layer)
    with transaction.atomic():
        envelope = publish("status_changed", {"n": 1})
        assert received(live_layer, channel, wait=0.3) == []  # not before the commit
    assert received(live_layer, channel) == [envelope]

    with pytest.raises(RuntimeError), transaction.atomic():
        publish("status_changed", {"n": 2})
        raise RuntimeError("the change failed")
    assert received(live_layer, channel, wait=0.3) == []  # nor when the change is rolled back
    assert list(Event.objects.values_list("data", flat=True)) == [{"n": 1}]


@override_settings(VX11_TOKEN="outbox-token")
def test_a_client_that_reconnects_gets_the_unsent_event_by_replay(dead_channel_layer):
    from vx11_site.asgi import application

    before = publish("status_changed", {"n": 0})
    missed = publish("status_changed", {"module": "madre", "to": "down"})
    config = redis_layer(redis_url(), f"outbox{os.getpid()}x{time.monotonic_ns()}")

    async def reconnect():
        comm = WebsocketCommunicator(application, f"/ws/s1?token=outbox-token&cursor={before['cursor']}")
        assert (await comm.connect())[0]
        hello = json.loads(await comm.receive_from(timeout=3))
        replayed = json.loads(await comm.receive_from(timeout=3))
        await comm.disconnect()
        return hello, replayed

    with channel_layer(config):
        hello, replayed = async_to_sync(reconnect)()
    assert hello["type"] == "connected"
    assert replayed == {**missed, "replayed": True}
