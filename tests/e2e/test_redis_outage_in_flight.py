"""Redis dies under a worker that is running a queued flow run and a daughter (broker, channel layer and
result store all on it): both run to their end, their events wait in the table instead of failing the
work, nothing is left `running`; once Redis is back the relay sends the events the worker could not."""

import asyncio
import os
import signal
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from apps.daughters.models import Daughter, DaughterTask
from apps.events.models import BROADCAST_GROUP, Event, relay_unsent
from apps.flows.models import Flow, FlowRun
from tests.helpers import (
    WorkerProcess,
    celery_sends_to,
    channel_layer,
    database_url_of_test_db,
    free_port,
    redis_layer,
    redis_server,
    redis_url,
)


def wait_for(what: str, check, worker: WorkerProcess, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s:\n{worker.output()}"
        time.sleep(0.1)
    return found


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_work_in_flight_ends_when_redis_dies_under_its_worker(tmp_path):
    redis_url()  # skips without Redis, as every services test
    port = free_port()
    url, queue = f"redis://127.0.0.1:{port}/0", f"in-flight-{os.getpid()}"
    server = redis_server(port)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "vx11_site.settings",
        "DATABASE_URL": database_url_of_test_db(),
        "REDIS_URL": url,
        "VX11_CELERY_QUEUE": queue,
        "VX11_DAUGHTER_HEARTBEAT_SECONDS": "0.2",
        "VX11_FLOW_RUN_HEARTBEAT_SECONDS": "0.2",
    }
    worker = WorkerProcess(env, "in-flight", tmp_path / "worker.log").start(concurrency=4)
    try:
        flow = Flow.save_spec(
            {
                "name": "W",
                "steps": [
                    {"name": "started", "db": {"model": "flows.Flow", "filter": {"name": "W"}}},
                    {
                        "name": "waits through the outage",
                        "db": {"model": "flows.Flow", "filter": {"name": "late"}, "within": 60},
                    },
                ],
            }
        )
        with celery_sends_to(url, queue):
            run = flow.queue(trigger="api")
            daughter = DaughterTask.spawn("sleep", {"seconds": 3}).daughters.get()
        wait_for("the run's first step", lambda: run.steps.filter(position=1).exists(), worker)
        wait_for("the daughter's start", lambda: daughter.attempts.exists(), worker)

        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        Flow.objects.create(name="late")  # what step 2 waits for, while Redis is gone

        ended = FlowRun.objects.exclude(status__in=FlowRun.UNFINISHED).filter(id=run.id)
        run = wait_for("the run's end", ended.first, worker)
        assert run.status == "passed", run.reason
        finished = Daughter.objects.filter(id=daughter.id, status="finished")
        daughter = wait_for("the daughter's end", finished.first, worker)
        assert daughter.task.status == "completed"
        unsent = Event.objects.filter(sent_at__isnull=True, data__run_id=run.id)
        assert unsent.filter(type="plan_updated", data__step=2).exists()
        assert unsent.filter(type="status_changed", data__status="passed").exists()
        oldest_unsent = Event.objects.filter(sent_at__isnull=True).order_by("id").first()
        assert worker.proc.poll() is None, worker.output()

        server = redis_server(port)  # Redis is back: the relay sends what the worker could not
        with channel_layer(redis_layer(url, "asgi")) as layer:
            listener = f"listener{time.monotonic_ns()}"
            async_to_sync(layer.group_add)(BROADCAST_GROUP, listener)
            assert relay_unsent(now=timezone.now() + timedelta(seconds=10))["pending"] == 0

            async def first():
                return (await asyncio.wait_for(layer.receive(listener), 5))["event"]

            assert async_to_sync(first)() == oldest_unsent.envelope
        assert not Event.objects.filter(sent_at__isnull=True).exists()
    finally:
        worker.kill(signal.SIGTERM)
        os.killpg(server.pid, signal.SIGKILL)
