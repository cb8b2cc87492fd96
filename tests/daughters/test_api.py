"""The daughters API: spawn, read, cancel; bad input gets a 4xx with a message and stores nothing."""

import pytest
from django.test import Client

from apps.daughters.models import Daughter, DaughterTask

pytestmark = pytest.mark.django_db


def test_spawn_creates_the_task_and_its_daughters(api, fleet):
    response = api.post(
        "/api/daughters",
        {
            "kind": "http",
            "params": {"module": "hermes", "path": "/tools"},
            "source": "shub",
            "description": "list tools",
            "count": 2,
            "ttl_seconds": 60,
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["source"], body["priority"], body["status"]) == ("shub", 0, "pending")
    assert [(d["name"], d["status"], d["ttl_seconds"]) for d in body["daughters"]] == [
        ("http-1", "spawned", 60),
        ("http-2", "spawned", 60),
    ]
    task = DaughterTask.objects.get(pk=body["id"])
    assert task.created_by.username == "operator"
    assert api.get(f"/api/daughters/tasks/{task.pk}").json()["daughters"][0]["params"]["path"] == "/tools"
    assert [t["id"] for t in api.get("/api/daughters/tasks?status=pending").json()["items"]] == [task.pk]
    assert api.get(f"/api/daughters?task_id={task.pk}").json()["count"] == 2


@pytest.mark.parametrize(
    "payload,status,message",
    [
        ({"kind": "teleport"}, 422, "unknown kind 'teleport'"),
        ({"kind": "command", "params": {"command": "rm"}}, 422, "not in the allow-list"),
        ({"kind": "sleep", "ttl_seconds": 0}, 422, "ttl_seconds"),
        ({"kind": "sleep", "source": "nobody"}, 422, "source"),
        ({"kind": "sleep", "shell": "rm -rf /"}, 422, "shell"),
        ({"kind": "sleep", "count": 5000}, 422, "count"),
        ({"kind": "sleep", "parent_id": 999999}, 422, "no daughter #999999"),
    ],
)
def test_bad_spawns_get_a_422(api, payload, status, message):
    response = api.post("/api/daughters", payload, content_type="application/json")
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert not DaughterTask.objects.exists()


def test_garbage_body_is_a_clear_error(api):
    response = api.post("/api/daughters", "{not json", content_type="application/json")
    assert 400 <= response.status_code < 500
    assert "detail" in response.json()


def test_read_only_keys_cannot_spawn_or_cancel(readonly_key):
    client = Client(headers={"X-API-Key": readonly_key})
    assert client.post("/api/daughters", {"kind": "sleep"}, content_type="application/json").status_code == 403
    assert client.get("/api/daughters/tasks").status_code == 200
    assert Client().get("/api/daughters/tasks").status_code == 401


def test_cancel_a_daughter_and_refuse_twice(api):
    task = DaughterTask.spawn("sleep", {"seconds": 5})
    daughter = task.daughters.get()
    response = api.post(f"/api/daughters/{daughter.pk}/cancel")
    assert response.json() == {"killed": 1, "status": "killed"}
    again = api.post(f"/api/daughters/{daughter.pk}/cancel")
    assert again.status_code == 409
    assert "already ended (killed)" in again.json()["detail"]
    assert api.post("/api/daughters/999999/cancel").status_code == 404
    assert api.get("/api/daughters/tasks/999999").status_code == 404
    task.refresh_from_db()
    killed = Daughter.objects.get(pk=daughter.pk)
    assert task.status == "cancelled"
    assert killed.ended_at is not None
    assert killed.error_last == "killed (cancelled by operator)"


def test_a_daughter_can_spawn_daughters(api):
    parent = DaughterTask.spawn("sleep", {"seconds": 1}).daughters.get()
    response = api.post(
        "/api/daughters",
        {"kind": "sleep", "source": "daughters", "parent_id": parent.pk},
        content_type="application/json",
    )
    child = response.json()["daughters"][0]
    assert (response.json()["priority"], child["parent_id"]) == (3, parent.pk)
    assert list(parent.children.values_list("id", flat=True)) == [child["id"]]
