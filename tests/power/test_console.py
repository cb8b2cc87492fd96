"""The admin's power console: the modules with their backends, plan/apply per module, modes and the
power window, each button through the same guards as the API and each press an audited row."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from apps.fleet.models import MaintenanceWindow
from apps.power.models import PowerAction

CONSOLE = "admin:power_console"


@pytest.fixture
def console(controller):
    client = Client()
    client.force_login(controller)
    controller.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="power", codename__startswith="view_")
    )
    return client


def press(client, **fields) -> list[str]:
    """Post a button, follow the redirect back to the console, return the messages that page showed."""
    response = client.post(reverse(CONSOLE), fields, follow=True)
    assert response.redirect_chain == [(reverse(CONSOLE), 302)]
    assert response.status_code == 200
    said = [str(m) for m in response.context["messages"]]
    assert said
    assert said[0].split(":")[0].lower() in response.content.decode().lower()
    return said


def changes(docker) -> list[list[str]]:
    """What the stand-in docker was asked to do (the page itself asks `compose ps` for the status)."""
    return [call for call in docker.calls() if "ps" not in call]


def test_the_page_lists_modules_backends_and_is_linked(console, power_on, compose_switch):
    page = console.get(reverse(CONSOLE)).content.decode()
    assert 'data-service="switch"' in page
    assert "compose" in page
    assert 'data-module="switch"' in page
    assert 'data-service="hermes"' in page
    assert "no control backend" in page
    assert reverse(CONSOLE) in console.get(reverse("admin:power_servicecontrol_changelist")).content.decode()


def test_plan_then_apply_a_start_through_the_guards(console, power_on, compose_switch, window):
    said = press(console, op="service", service="switch", action="start", apply="")
    assert said[0] == (
        "Plan for start switch: docker compose -p vx11 up -d switch. Nothing was done; press Apply to carry it out. "
        f"(audited as action #{PowerAction.objects.get().id})"
    )
    assert changes(compose_switch) == []
    said = press(console, op="service", service="switch", action="start", apply="on")
    assert said[0].startswith("start switch: no open maintenance window covers switch; open one first")
    assert changes(compose_switch) == []
    window("switch")
    said = press(console, op="service", service="switch", action="stop", apply="on")
    assert changes(compose_switch) == [["compose", "-p", "vx11", "stop", "switch"]], said
    rows = list(PowerAction.objects.order_by("id").values_list("actor", "action", "applied", "result", "http_status"))
    assert rows == [
        ("controller", "start", False, "ok", 200),
        ("controller", "start", False, "refused", 409),
        ("controller", "stop", True, "ok", 200),
    ]


def test_guards_hold_in_the_console(console, power_on, compose_switch, controller):
    said = press(console, op="service", service="madre", action="stop", apply="on")
    assert said[0].startswith("stop madre: madre cannot be stopped")
    power_on.VX11_ALLOW_SERVICE_CONTROL = False
    said = press(console, op="service", service="switch", action="start", apply="on")
    assert "VX11_ALLOW_SERVICE_CONTROL" in said[0]
    controller.user_permissions.remove(*controller.user_permissions.filter(codename="control_services"))
    said = press(console, op="service", service="switch", action="start", apply="")
    assert "power.control_services" in said[0]
    assert list(PowerAction.objects.order_by("id").values_list("http_status", flat=True)) == [403, 403, 403]
    assert changes(compose_switch) == []


def test_mode_plan_and_window_open_close(console, power_on, compose_switch):
    said = press(console, op="mode", mode="low_power", apply="")
    assert said[0].startswith("Plan for mode low_power: stop switch.")
    said = press(console, op="window_open", services=["switch", "hermes"], ttl_sec="60", mode="hold", reason="upgrade")
    window = MaintenanceWindow.objects.get()
    assert "open for 60 s" in said[0]
    assert window.mode == "hold"
    assert sorted(m.slug for m in window.modules.all()) == ["hermes", "switch"]
    page = console.get(reverse(CONSOLE)).content.decode()
    assert f"Window #{window.id} (hold)" in page
    assert "upgrade" in page
    assert "already open" in press(console, op="window_open", services=["switch"], ttl_sec="60", mode="ttl")[0]
    assert "closed" in press(console, op="window_close")[0]
    assert MaintenanceWindow.objects.get().closed_at is not None


@pytest.mark.parametrize(
    "fields, where",
    [
        ({"op": "service", "service": "switch", "action": "explode"}, "action"),
        ({"op": "service", "service": "../etc", "action": "start"}, "service"),
        ({"op": "mode", "mode": "turbo"}, "mode"),
        ({"op": "window_open", "services": ["ghost"], "ttl_sec": "60", "mode": "ttl"}, "services"),
        ({"op": "window_open", "services": ["switch"], "ttl_sec": "0", "mode": "ttl"}, "ttl_sec"),
    ],
)
def test_bad_input_is_refused_audited_and_does_nothing(console, power_on, compose_switch, fields, where):
    said = press(console, **fields)
    assert said[0].count("nothing done") == 1
    assert where in said[0]
    row = PowerAction.objects.get()
    assert (row.result, row.http_status, row.plan["refused_by"], row.plan["via"]) == (
        "refused",
        422,
        "validation",
        "admin console",
    )
    assert changes(compose_switch) == []
    assert not MaintenanceWindow.objects.exists()


def test_staff_without_the_view_permission_cannot_see_it(db, django_user_model):
    user = django_user_model.objects.create_user("nobody", password=None, is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(reverse(CONSOLE)).status_code == 403
    assert client.post(reverse(CONSOLE), {"op": "window_close"}).status_code == 403
    assert not PowerAction.objects.exists()
