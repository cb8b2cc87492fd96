"""POST /api/daughters with an Idempotency-Key: a client that retries gets the task its first request made
(200 instead of 201), never a duplicate, even when the retries race each other; the key is per user, bound
to the request it came with (another body is a 422) and honoured for VX11_DAUGHTER_IDEMPOTENCY_HOURS."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.accounts.models import ApiKey
from apps.daughters.models import DaughterTask
from apps.daughters.tasks import reap_daughters

SLEEP = {"kind": "sleep", "params": {"seconds": 1}, "description": "idempotent"}


def spawn(client, body=SLEEP, key="retry-4f1c"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/api/daughters", body, content_type="application/json", headers=headers)


@pytest.mark.django_db
def test_a_retry_with_the_same_key_gets_the_same_task(api):
    first = spawn(api)
    again = spawn(api)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert DaughterTask.objects.count() == 1
    assert spawn(api, key=None).status_code == 201  # no key: every request is a new task
    assert spawn(api, key="another-key").status_code == 201
    assert DaughterTask.objects.count() == 3


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_422_and_stores_nothing(api):
    task_id = spawn(api).json()["id"]
    response = spawn(api, {**SLEEP, "params": {"seconds": 2}})
    assert response.status_code == 422
    assert response.json()["detail"] == (
        f"idempotency_key: Idempotency-Key 'retry-4f1c' was already used for a "
        f"different request (task #{task_id}); use a new key for a new request"
    )
    assert DaughterTask.objects.count() == 1


@pytest.mark.django_db
def test_keys_are_per_user(api, django_user_model, grant):
    other = grant(django_user_model.objects.create_user("other"), "daughters.spawn_daughter")
    other_client = Client(headers={"X-API-Key": ApiKey.issue(other, "other rw")[1]})
    mine, theirs = spawn(api), spawn(other_client)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_a_malformed_key_is_a_422(api, key):
    response = spawn(api, key=key)
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert not DaughterTask.objects.exists()


@pytest.mark.django_db
def test_a_key_is_forgotten_after_its_window(api, settings):
    settings.VX11_DAUGHTER_IDEMPOTENCY_HOURS = 24
    first = DaughterTask.objects.get(pk=spawn(api).json()["id"])
    assert DaughterTask.forget_idempotency_keys(now=timezone.now() + timedelta(hours=23)) == 0
    assert spawn(api).status_code == 200
    assert DaughterTask.forget_idempotency_keys(now=timezone.now() + timedelta(hours=25)) == 1
    first.refresh_from_db()
    assert (first.idempotency_key, first.request_fingerprint) == ("", "")
    assert spawn(api).status_code == 201  # the key makes a new task now
    assert "forgotten_keys" in reap_daughters()  # the reaper's beat entry does it


@pytest.mark.django_db
def test_a_key_past_its_window_makes_a_new_task_before_the_reaper_clears_it(api):
    first = spawn(api).json()["id"]
    DaughterTask.objects.filter(pk=first).update(created=timezone.now() - timedelta(hours=25))
    again = spawn(api, {**SLEEP, "params": {"seconds": 2}})  # even with another body: the old use has expired
    assert again.status_code == 201
    assert again.json()["id"] != first


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_make_one_task(operator_key):
    """Eight clients send the same request with the same key at the same moment (threads, each its own connection)."""
    barrier = threading.Barrier(8)
    answers = []

    def client():
        try:
            barrier.wait()
            response = spawn(Client(headers={"Authorization": f"Bearer {operator_key}"}))
            answers.append((response.status_code, response.json().get("id")))
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    task = DaughterTask.objects.get()
    assert sorted(answers) == [(200, task.pk)] * 7 + [(201, task.pk)]
    assert task.daughters.count() == 1
