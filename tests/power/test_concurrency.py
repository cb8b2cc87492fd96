"""Two actions on one module never run at once: the second gets 409 "another action is running".

Two threads, each with its own database connection (a transactional test), race to start the
same demo module; the claim is a conditional UPDATE on the ServiceControl row.
"""

import threading

from django.db import connection

from apps.power.models import PowerAction, ServiceControl


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
    assert control.pid and control.busy_since is None  # one process; the claim was released
    from apps.power import backends

    assert sum(child.poll() is None for child in backends._children.values()) == 1


def test_stale_claim_is_taken_over(power_on, demo_process, db):
    from datetime import timedelta

    from django.utils import timezone

    control = demo_process("hermes")
    ServiceControl.objects.filter(pk=control.pk).update(busy_since=timezone.now() - timedelta(hours=1), busy_with="crashed worker")
    assert control.claim("new action")
    assert not control.claim("third action")
    control.release()
    assert control.claim("after release")
