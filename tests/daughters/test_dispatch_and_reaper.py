"""The running cap and priority order of dispatch, and the reaper's set-based sweeps.

These tests stay inside one transaction, so nothing is handed to a Celery broker: dispatch()
only marks rows (its messages are sent on commit)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.daughters.models import Daughter, DaughterAttempt, DaughterTask
from apps.events.models import Event
from tests.helpers import celery_sends_to

pytestmark = pytest.mark.django_db


def spawn(source="madre", n=1, **kw):
    return DaughterTask.spawn("sleep", {"seconds": 1}, source=source, count=n, **kw)


def test_at_most_the_cap_is_dispatched_best_priority_first(settings):
    settings.VX11_DAUGHTER_MAX_RUNNING = 3
    daughters_task = spawn("daughters", 2)
    madre_task = spawn("madre", 2)
    shub_task = spawn("shub", 1)
    assert Daughter.dispatch() == 3
    dispatched = Daughter.objects.filter(dispatched_at__isnull=False)
    assert sorted(dispatched.values_list("task_id", flat=True)) == sorted([shub_task.pk, madre_task.pk, madre_task.pk])
    assert Daughter.dispatch() == 0  # full: the rest wait
    Daughter.objects.filter(task=shub_task).update(status="finished", ended_at=timezone.now())
    assert Daughter.dispatch() == 1  # a free slot goes to the next in line
    assert Daughter.objects.filter(task=daughters_task, dispatched_at__isnull=False).count() == 1


def running(task, started_ago=0, heartbeat_ago=0, level=0, ttl=300):
    now = timezone.now()
    started = now - timedelta(seconds=started_ago)
    ids = list(task.daughters.values_list("id", flat=True))
    task.daughters.update(
        status="running",
        dispatched_at=started,
        started_at=started,
        expires_at=started + timedelta(seconds=ttl),
        last_heartbeat_at=now - timedelta(seconds=heartbeat_ago),
        mutation_level=level,
    )
    DaughterAttempt.objects.bulk_create(
        DaughterAttempt(daughter_id=i, attempt_number=level + 1, started_at=started) for i in ids
    )
    return ids


def test_reaper_expires_retries_and_fails_in_one_sweep():
    healthy = spawn()
    past_ttl = spawn(ttl_seconds=10)
    stale = spawn(max_retries=2)
    exhausted = spawn(max_retries=1)
    running(healthy, started_ago=5, heartbeat_ago=1)
    running(past_ttl, started_ago=11, heartbeat_ago=1, ttl=10)
    running(stale, started_ago=90, heartbeat_ago=61)
    running(exhausted, started_ago=90, heartbeat_ago=61, level=1)

    before = timezone.now()
    assert Daughter.reap() == {"expired": 1, "retried": 1, "failed": 1, "requeued": 0}

    status = {t.pk: t.daughters.get() for t in (healthy, past_ttl, stale, exhausted)}
    assert status[healthy.pk].status == "running"
    assert (status[past_ttl.pk].status, status[past_ttl.pk].error_last) == ("expired", "TTL passed (expired)")
    retried = status[stale.pk]
    assert (retried.status, retried.mutation_level) == ("mutated", 1)
    assert retried.dispatched_at >= before  # queued again and handed out by the same sweep
    assert "no heartbeat for 60 s" in retried.error_last
    assert status[exhausted.pk].status == "failed"
    assert "retries exhausted" in status[exhausted.pk].error_last
    assert set(DaughterAttempt.objects.filter(status="timeout").values_list("daughter__task_id", flat=True)) == {
        past_ttl.pk,
        stale.pk,
        exhausted.pk,
    }
    for task, expected in ((past_ttl, "expired"), (stale, "retrying"), (exhausted, "failed")):
        task.refresh_from_db()
        assert task.status == expected
    assert Event.objects.filter(
        type="status_changed", data__why="reaped", data__status="expired", data__daughters_changed=1
    ).exists()
    assert Daughter.reap() == {"expired": 0, "retried": 0, "failed": 0, "requeued": 0}  # idempotent


def test_a_dispatch_that_never_started_goes_back_to_the_queue(settings):
    task = spawn()
    Daughter.dispatch()
    Daughter.objects.update(dispatched_at=timezone.now() - timedelta(seconds=settings.VX11_DAUGHTER_START_TIMEOUT + 1))
    assert Daughter.reap()["requeued"] == 1
    assert task.daughters.get().dispatched_at is not None  # and handed out again by the same sweep


def sweep_queries(n):
    DaughterTask.objects.all().delete()
    for _ in range(n):
        running(spawn(ttl_seconds=10), started_ago=11, ttl=10)
        running(spawn(), started_ago=90, heartbeat_ago=61)
    with CaptureQueriesContext(connection) as ctx:
        result = Daughter.reap()
    assert result["expired"] == n
    assert result["retried"] == n
    return len(ctx.captured_queries)


def test_the_reaper_is_set_based():
    """The number of queries of a sweep does not grow with the number of rows it touches
    (past a handful of tasks, whose plan_updated events are sent one by one)."""
    assert sweep_queries(10) == sweep_queries(60)


def test_cancel_kills_live_daughters_and_the_task():
    task = spawn(n=3)
    running(task)
    Daughter.objects.filter(pk=task.daughters.first().pk).update(status="finished")
    assert task.cancel() == 2
    task.refresh_from_db()
    assert sorted(task.daughters.values_list("status", flat=True)) == ["finished", "killed", "killed"]
    assert task.status == "cancelled"
    assert DaughterAttempt.objects.filter(daughter__task=task, status="cancelled").count() == 2


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_broker_leaves_the_daughter_queued():
    """The spawn still answers; the daughter waits for the next dispatch instead of being lost."""
    with celery_sends_to("redis://127.0.0.1:1/0", "nowhere"):
        task = DaughterTask.spawn("sleep", {"seconds": 0})
    daughter = task.daughters.get()
    assert (daughter.status, daughter.dispatched_at) == ("spawned", None)


def test_a_sweep_over_more_tasks_than_one_query_takes():
    """Task statuses are refreshed in chunks, so a huge sweep never exceeds the database's parameter bound."""
    tasks = [spawn() for _ in range(7)]
    for task in tasks:
        running(task, started_ago=11, ttl=10)
    changed = DaughterTask.refresh_statuses([t.pk for t in tasks], chunk=3)
    assert sorted(changed) == sorted(t.pk for t in tasks)  # all were pending, now running
    assert set(DaughterTask.objects.values_list("status", flat=True)) == {"running"}
    DaughterTask.announce_changes(changed)  # up to 10 tasks: one plan_updated each
    assert Event.objects.filter(type="plan_updated", data__status="running").count() == 7


def test_the_retry_update_rechecks_status_and_heartbeat_under_the_row_lock():
    """No join in the reaper's retry UPDATE: Django would turn it into `id IN (subquery)`, and a row
    that finished or was killed in between would be brought back as mutated."""
    running(spawn(), started_ago=90, heartbeat_ago=61)
    with CaptureQueriesContext(connection) as ctx:
        assert Daughter.reap()["retried"] == 1
    retry = next(
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].startswith("UPDATE") and "mutation_level" in q["sql"].split("WHERE")[0]
    )
    where = retry.split("WHERE", 1)[1]
    assert "last_heartbeat_at" in where
    assert "status" in where
    assert "SELECT" not in where


def orphan(attempt_id: int | None):
    """A command a dead worker left behind: its own process group, the attempt's id in its environment (or none)."""
    import os
    import subprocess
    import sys

    from apps.daughters.models import ATTEMPT_ENV

    env = (
        {**os.environ, ATTEMPT_ENV: str(attempt_id)}
        if attempt_id
        else {k: v for k, v in os.environ.items() if k != ATTEMPT_ENV}
    )
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True, env=env)


def test_the_reaper_kills_the_command_a_dead_worker_left_and_nothing_else():
    from apps.daughters.models import HOST

    lost, reused, elsewhere, cancelled = spawn(max_retries=1), spawn(ttl_seconds=10), spawn(ttl_seconds=10), spawn()
    running(lost, started_ago=90, heartbeat_ago=61)  # stale: retried
    running(reused, started_ago=11, heartbeat_ago=1, ttl=10)  # past its TTL: expired
    running(elsewhere, started_ago=11, heartbeat_ago=1, ttl=10)
    running(cancelled, started_ago=5, heartbeat_ago=1)  # healthy: only a cancel ends it
    attempt = {
        name: DaughterAttempt.objects.get(daughter__task=t)
        for name, t in (("lost", lost), ("reused", reused), ("elsewhere", elsewhere), ("cancelled", cancelled))
    }
    procs = {
        "lost": orphan(attempt["lost"].pk),
        "reused": orphan(None),
        "elsewhere": orphan(attempt["elsewhere"].pk),
        "cancelled": orphan(attempt["cancelled"].pk),
    }
    try:
        for name, host in (("lost", HOST), ("reused", HOST), ("elsewhere", "another-host"), ("cancelled", HOST)):
            # "reused": a pid the kernel gave to another program since; its environment names no attempt
            DaughterAttempt.objects.filter(pk=attempt[name].pk).update(pid=procs[name].pid, host=host)
        assert Daughter.reap() == {"expired": 2, "retried": 1, "failed": 0, "requeued": 0}
        procs["lost"].wait(timeout=5)
        assert procs["lost"].returncode == -9
        assert all(procs[name].poll() is None for name in ("reused", "elsewhere", "cancelled"))
        assert cancelled.cancel() == 1
        procs["cancelled"].wait(timeout=5)
        assert procs["cancelled"].returncode == -9
        assert procs["reused"].poll() is None
        assert procs["elsewhere"].poll() is None
        assert not DaughterAttempt.objects.filter(pid__isnull=False).exists()  # ended attempts keep no pid
    finally:
        for p in procs.values():
            p.kill()
            p.wait(timeout=5)


def test_prune_drops_old_ended_tasks_with_their_daughters_and_attempts_only(settings):
    settings.VX11_DAUGHTER_RETENTION_DAYS = 30
    old_done, old_live, recent_done = spawn(n=3), spawn(n=2), spawn(n=1)
    parent = recent_done.daughters.get()
    DaughterTask.spawn("sleep", {"seconds": 1}, parent_id=parent.pk)  # a child elsewhere keeps its parent
    orphan_of_old = DaughterTask.spawn("sleep", {"seconds": 1}, parent_id=old_done.daughters.first().pk).daughters.get()
    for task in (old_done, recent_done):
        running(task)
        task.daughters.update(status="finished", ended_at=timezone.now())
    long_ago = timezone.now() - timedelta(days=31)
    DaughterTask.objects.filter(pk=old_done.pk).update(status="completed", updated=long_ago)
    DaughterTask.objects.filter(pk=old_live.pk).update(updated=long_ago)  # pending: not ended, kept
    DaughterTask.objects.filter(pk=recent_done.pk).update(status="completed")
    assert DaughterTask.prune() == 1 + 3 + 3  # the task, its daughters, their attempts
    assert not DaughterTask.objects.filter(pk=old_done.pk).exists()
    assert DaughterTask.objects.filter(pk__in=[old_live.pk, recent_done.pk]).count() == 2
    orphan_of_old.refresh_from_db()
    assert orphan_of_old.parent_id is None  # SET_NULL, as before
    assert DaughterAttempt.objects.filter(daughter__task=recent_done).count() == 1
