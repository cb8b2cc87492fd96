"""Two actions on one module never run at once: the second gets 409 "another action is running".

Two threads, each with its own database connection (a transactional test), race to start the
same demo module; the claim is a conditional UPDATE on the ServiceControl row.
"""

import threading

from django.db import connection

from apps.power.models import PowerAction, ServiceControl
from tests.power.helpers import slow


def test_concurrent_actions_are_serialised(power_on, power_api, demo_process, window, transactional_db):
    control = demo_process("hermes")
    window("hermes")
    barrier = threading.Barrier(2)
    answers = []

    def start():
        try:
            barrier.wait()
            r = power_api.post("/madre/power/service/hermes/start", {"apply": True}, content_type="application/json")
            answers.append((r.status_code, r.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert sorted(status for status, _ in answers) == [200, 409]
    refusal = next(body for status, body in answers if status == 409)
    assert "another action is running on hermes" in refusal["detail"]
    assert PowerAction.objects.filter(result="refused", http_status=409).count() == 1
    control.refresh_from_db()
    assert control.pid  # one process
    assert control.busy_since is None  # the claim was released
    from apps.power import backends

    assert sum(child.poll() is None for child in backends._children.values()) == 1


def test_stale_claim_is_taken_over(power_on, demo_process, db):
    from datetime import timedelta

    from django.utils import timezone

    control = demo_process("hermes")
    ServiceControl.objects.filter(pk=control.pk).update(
        busy_since=timezone.now() - timedelta(hours=1), busy_with="crashed worker"
    )
    assert control.claim("new action")
    assert not control.claim("third action")
    control.release()
    assert control.claim("after release")


def test_concurrent_window_opening_one_wins(power_on, power_api, fleet, transactional_db, monkeypatch):
    """Two requests open a power window at the same moment: one 200, one 409, one window.

    Each thread waits after it looked for an open window, so without serialisation (PostgreSQL's
    advisory lock; SQLite's IMMEDIATE transactions) both would see none and both would open one.
    """
    from time import sleep

    from apps.fleet.models import MaintenanceWindow

    looked = MaintenanceWindow.open_power_window.__func__

    def slow_look(cls, at=None):
        found = looked(cls, at)
        sleep(0.5)
        return found

    monkeypatch.setattr(MaintenanceWindow, "open_power_window", classmethod(slow_look))
    barrier = threading.Barrier(2)
    answers = []

    def open_one(slug):
        try:
            barrier.wait()
            r = power_api.post(
                "/madre/power/window/open", {"services": [slug], "ttl_sec": 60}, content_type="application/json"
            )
            answers.append((r.status_code, r.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=open_one, args=(slug,)) for slug in ("switch", "hermes")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert sorted(status for status, _ in answers) == [200, 409], answers
    refusal = next(body for status, body in answers if status == 409)
    assert "is already open" in refusal["detail"]
    assert MaintenanceWindow.objects.filter(source="power").count() == 1
    assert sorted(PowerAction.objects.filter(action="window_open").values_list("result", flat=True)) == [
        "ok",
        "refused",
    ]


def test_parallel_requests_cannot_pass_the_rate_limit(power_on, power_api, fleet, stand_in, window, transactional_db):
    """limit + 2 applied requests at once, each on its own module (no claim conflict), a slow `docker compose`:
    exactly `limit` run, the others get 429. The row is inserted (pending) with the count, not after the action."""
    power_on.VX11_POWER_RATE_LIMIT_PER_MIN = 3
    slugs = ["switch", "hermes", "mcp", "spawner", "hormiguero"]
    docker = slow(stand_in("docker"), 1.0)
    for slug in slugs:
        ServiceControl.objects.create(module=fleet[slug], backend=ServiceControl.Backend.COMPOSE)
    window(*slugs)
    barrier = threading.Barrier(len(slugs))
    answers = []

    def start(slug):
        try:
            barrier.wait()
            r = power_api.post(f"/madre/power/service/{slug}/start", {"apply": True}, content_type="application/json")
            answers.append((r.status_code, r.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(slug,)) for slug in slugs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert sorted(status for status, _ in answers) == [200, 200, 200, 429, 429], answers
    assert all(
        "rate limit" in body["detail"] and "limit 3" in body["detail"] for status, body in answers if status == 429
    )
    assert len(docker.calls()) == 3
    assert PowerAction.objects.filter(applied=True, result="ok").count() == 3
    assert PowerAction.objects.filter(applied=False, result="refused", http_status=429).count() == 2
    assert not PowerAction.objects.filter(result="pending").exists()  # every reserved row was finished
