"""The admin: spawn from the add page, the task page with daughters and attempts, filters, cancel."""

import pytest

from apps.daughters.models import DaughterAttempt, DaughterTask

pytestmark = pytest.mark.django_db


def test_spawn_from_the_admin(client, admin_user):
    client.force_login(admin_user)
    assert client.get("/admin/daughters/daughtertask/add/").status_code == 200
    response = client.post(
        "/admin/daughters/daughtertask/add/",
        {
            "kind": "sleep",
            "params": '{"seconds": 1}',
            "source": "operator",
            "description": "from admin",
            "name": "",
            "ttl_seconds": "30",
            "max_retries": "1",
            "count": "2",
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    task = DaughterTask.objects.get(description="from admin")
    assert task.daughters.count() == 2
    assert task.created_by == admin_user
    assert task.max_retries == 1


def test_a_bad_spawn_form_names_the_problem(client, admin_user):
    client.force_login(admin_user)
    response = client.post(
        "/admin/daughters/daughtertask/add/",
        {"kind": "command", "params": '{"command": "rm"}', "source": "operator", "max_retries": "2", "count": "1"},
    )
    assert response.status_code == 200
    assert "not in the allow-list" in response.content.decode()
    assert not DaughterTask.objects.exists()


def test_task_page_lists_and_filters(client, admin_user):
    client.force_login(admin_user)
    task = DaughterTask.spawn("sleep", {"seconds": 1}, description="visible task")
    daughter = task.daughters.get()
    DaughterAttempt.objects.create(daughter=daughter, attempt_number=1, status="error", error="boom at step 3")
    page = client.get(f"/admin/daughters/daughtertask/{task.pk}/change/").content.decode()
    assert "boom at step 3" in page
    assert daughter.name in page
    assert "visible task" in client.get("/admin/daughters/daughtertask/?status__exact=pending&age=1h").content.decode()
    assert "visible task" not in client.get("/admin/daughters/daughtertask/?age=older").content.decode()
    assert client.get("/admin/daughters/daughter/?status__exact=spawned").status_code == 200
    client.post("/admin/daughters/daughtertask/", {"action": "cancel_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.status == "cancelled"
    assert task.daughters.get().error_last == "killed (cancelled by admin)"
