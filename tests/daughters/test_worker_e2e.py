"""Daughters end to end on a real Celery worker process and real Redis: success, failure with
retries, a worker killed mid-task (the daughter is retried, never lost), TTL expiry, cancel."""

import signal
import time
from datetime import timedelta

import pytest

from apps.daughters.models import Daughter, DaughterTask

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def wait_for(predicate, worker, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert worker.proc.poll() is None, worker.output()
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; worker said:\n{worker.output()}")


def status_of(daughter):
    daughter.refresh_from_db()
    return daughter.status


def test_success_and_failure_with_retries(daughter_worker):
    ok = DaughterTask.spawn("command", {"command": "true"}).daughters.get()
    bad = DaughterTask.spawn("sleep", {"fail": True}, max_retries=2).daughters.get()
    wait_for(lambda: status_of(ok) == "finished" and status_of(bad) == "failed", daughter_worker, what="both to end")
    assert ok.attempts.get().worker.startswith("daughters-test")
    assert list(bad.attempts.values_list("status", flat=True)) == ["error", "error", "error"]
    bad.task.refresh_from_db()
    assert bad.mutation_level == 2
    assert bad.task.status == "failed"


def gone(pid: int) -> bool:
    """No such process, or a zombie only waiting for its (new) parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_worker_killed_mid_task_loses_nothing(daughter_worker, settings, tmp_path):
    settings.VX11_DAUGHTER_STALE_SECONDS = 2
    daughter = DaughterTask.spawn(
        "command", {"command": "once-slow", "args": [str(tmp_path / "marker")], "timeout": 60}
    ).daughters.get()
    wait_for(
        lambda: status_of(daughter) == "running" and (tmp_path / "marker").exists(),
        daughter_worker,
        what="the daughter to start",
    )
    daughter_worker.kill()  # SIGKILL: the message was never acknowledged, the attempt never ended
    orphan = daughter.attempts.get().pid  # the command, left running by the dead worker
    assert orphan
    assert not gone(orphan)
    # staleness is judged at times given to the reaper, from the last heartbeat the dead worker wrote
    daughter.refresh_from_db()
    stale_at = daughter.last_heartbeat_at + timedelta(seconds=settings.VX11_DAUGHTER_STALE_SECONDS)
    assert Daughter.reap(now=stale_at - timedelta(seconds=1))["retried"] == 0
    assert status_of(daughter) == "running"
    assert not gone(orphan)
    assert Daughter.reap(now=stale_at + timedelta(seconds=1))["retried"] == 1
    deadline = time.monotonic() + 5
    while not gone(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(orphan)  # the reaper killed it (same host, its environment names the attempt)
    assert status_of(daughter) == "mutated"
    assert daughter.mutation_level == 1
    daughter_worker.start()
    wait_for(lambda: status_of(daughter) == "finished", daughter_worker, what="the retry to finish")
    assert list(daughter.attempts.values_list("attempt_number", "status")) == [(1, "timeout"), (2, "success")]
    # the first delivery (level 0) was never acknowledged; when the broker hands it out again it is a no-op
    assert Daughter.run(daughter.pk, 0).startswith("not claimed")
    assert daughter.attempts.count() == 2
    assert status_of(daughter) == "finished"


def test_ttl_expiry_stops_the_work(daughter_worker):
    daughter = DaughterTask.spawn("sleep", {"seconds": 30}, ttl_seconds=1).daughters.get()
    wait_for(lambda: status_of(daughter) == "running", daughter_worker, what="the daughter to start")
    # expiry is judged at times given to the reaper, from the expiry the worker's claim set
    assert Daughter.reap(now=daughter.expires_at - timedelta(seconds=0.5))["expired"] == 0
    assert status_of(daughter) == "running"
    assert Daughter.reap(now=daughter.expires_at + timedelta(seconds=0.1))["expired"] == 1
    wait_for(
        lambda: daughter.attempts.get().ended_at is not None,
        daughter_worker,
        timeout=5,
        what="the worker to stop the work",
    )
    assert status_of(daughter) == "expired"
    assert daughter.attempts.get().status == "timeout"
    daughter.task.refresh_from_db()
    assert daughter.task.status == "expired"
    after = DaughterTask.spawn("command", {"command": "true"}).daughters.get()  # the worker is free again
    wait_for(lambda: status_of(after) == "finished", daughter_worker, what="the next daughter")


def test_cancel_through_the_api_stops_a_running_daughter(daughter_worker, api):
    daughter = DaughterTask.spawn("sleep", {"seconds": 30}).daughters.get()
    wait_for(lambda: status_of(daughter) == "running", daughter_worker, what="the daughter to start")
    response = api.post(f"/api/daughters/tasks/{daughter.task_id}/cancel")
    assert response.status_code == 200
    assert response.json() == {"killed": 1, "status": "cancelled"}
    wait_for(
        lambda: daughter.attempts.get().status == "cancelled", daughter_worker, timeout=5, what="the worker to stop"
    )
    assert status_of(daughter) == "killed"


def test_the_running_cap_holds_on_real_workers(daughter_worker, settings):
    settings.VX11_DAUGHTER_MAX_RUNNING = 2  # this process dispatches on spawn, the worker after each end
    daughter_worker.kill(signal.SIGTERM)
    daughter_worker.env["VX11_DAUGHTER_MAX_RUNNING"] = "2"
    daughter_worker.start()
    task = DaughterTask.spawn("sleep", {"seconds": 0.5}, count=6)
    most = 0
    deadline = time.monotonic() + 30
    while task.daughters.exclude(status="finished").exists() and time.monotonic() < deadline:
        most = max(most, task.daughters.filter(status="running").count())
        time.sleep(0.05)
    assert task.daughters.filter(status="finished").count() == 6, daughter_worker.output()
    assert 1 <= most <= 2
