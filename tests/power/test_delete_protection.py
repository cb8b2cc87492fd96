"""A module whose process the portal runs is not deleted while it runs (API, admin, bulk action), nor is its
service control: the pid would go with the row and the process would run on with nothing to stop it."""

import subprocess
import sys

import pytest
from django.test import Client

from apps.fleet.models import Module
from apps.power.models import ServiceControl

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def running(fleet):
    """hermes under the process backend, its process alive (started here, so no health wait)."""
    proc = subprocess.Popen(SLEEPER, start_new_session=True)
    control = ServiceControl.objects.create(
        module=fleet["hermes"], backend=ServiceControl.Backend.PROCESS, command=SLEEPER, pid=proc.pid
    )
    assert control.running()

    def stop():
        proc.kill()
        proc.wait(timeout=10)

    control.stop_process = stop
    yield control
    if proc.poll() is None:
        stop()


@pytest.fixture
def admin_client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def kept(control) -> bool:
    return (
        Module.objects.filter(pk=control.module_id).exists() and ServiceControl.objects.filter(pk=control.pk).exists()
    )


def test_the_api_refuses_with_409_until_the_process_is_stopped(api, running):
    response = api.delete("/api/modules/hermes")
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"module 'hermes' was not deleted: the power manager runs its process (pid {running.pid}); "
        "stop it first (Power console, or POST /madre/power/service/hermes/stop)"
    )
    assert kept(running)
    running.stop_process()
    assert api.delete("/api/modules/hermes").status_code == 204
    assert not Module.objects.filter(slug="hermes").exists()
    assert not ServiceControl.objects.exists()


def test_a_control_the_portal_runs_nothing_for_does_not_block(api, fleet):
    ServiceControl.objects.create(module=fleet["switch"], backend=ServiceControl.Backend.COMPOSE)
    ServiceControl.objects.create(
        module=fleet["madre"], backend=ServiceControl.Backend.PROCESS, command=SLEEPER
    )  # not started
    assert api.delete("/api/modules/switch").status_code == 204
    assert api.delete("/api/modules/madre").status_code == 204
    assert not ServiceControl.objects.exists()


def test_the_admin_delete_refuses_with_409(admin_client, running):
    url = f"/admin/fleet/module/{running.module_id}/delete/"
    page = admin_client.get(url)
    assert page.status_code == 409
    assert "protected related objects" in page.content.decode()
    assert "hermes (process)" in page.content.decode()
    assert admin_client.post(url, {"post": "yes"}).status_code == 409
    assert kept(running)


def test_the_bulk_delete_refuses_the_whole_batch_with_409(admin_client, running, fleet):
    chosen = [running.module_id, fleet["switch"].pk]
    response = admin_client.post(
        "/admin/fleet/module/", {"action": "delete_selected", "_selected_action": chosen, "post": "yes"}
    )
    assert response.status_code == 409
    assert "Service control" in response.content.decode()
    # nothing deleted half-way
    assert kept(running)
    assert Module.objects.filter(slug="switch").exists()


def test_the_service_control_itself_is_not_deleted_while_its_process_runs(admin_client, running):
    url = f"/admin/power/servicecontrol/{running.pk}/delete/"
    assert admin_client.post(url, {"post": "yes"}).status_code == 409
    response = admin_client.post(
        "/admin/power/servicecontrol/", {"action": "delete_selected", "_selected_action": [running.pk], "post": "yes"}
    )
    assert response.status_code == 409
    assert "the power manager runs its process" in response.content.decode()
    assert kept(running)
    running.stop_process()
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not ServiceControl.objects.exists()
    assert Module.objects.filter(slug="hermes").exists()
