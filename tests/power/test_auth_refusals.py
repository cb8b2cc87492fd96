"""Refusals by the auth are audited too: a read-only key's write, a bad key, no credentials, a failed CSRF check.

The client sees what the portal API answers everywhere (same status, same message, before the body
is validated); the power routes write the PowerAction row (and its evidence folder) first.
"""

import json
from datetime import timedelta

from django.contrib.auth.models import Permission
from django.db.models import F
from django.test import Client

from apps.accounts.models import ApiKey
from apps.power import manager
from apps.power import models as power
from apps.power.models import PowerAction
from tests.power.helpers import post

READ_ONLY = "API key 'viewer ro' is read-only; POST needs a read-write key"


def test_read_only_key_write_is_a_refused_row(power_on, compose_switch, readonly_key, evidence):
    ro = Client(headers={"Authorization": f"Bearer {readonly_key}"})
    r = post(ro, "/madre/power/service/start", {"service": "switch"})
    assert (r.status_code, r.json()["detail"]) == (403, READ_ONLY)
    r = post(ro, "/api/power/window/open", {"services": ["switch", "hermes"], "ttl_sec": 60})
    assert (r.status_code, r.json()["detail"]) == (403, READ_ONLY)
    r = post(ro, "/madre/power/mode", {"mode": "turbo"})  # refused before the body is validated, as before
    assert (r.status_code, r.json()["detail"]) == (403, READ_ONLY)
    r = post(ro, "/madre/power/service/hermes/restart", {"apply": True})
    assert r.status_code == 403
    assert compose_switch.calls() == []
    assert ro.get("/madre/power/status").status_code == 200  # reading is fine, and no row

    rows = list(PowerAction.objects.order_by("id"))
    assert [(a.action, a.service) for a in rows] == [
        ("start", "switch"),
        ("window_open", "switch,hermes"),
        ("mode", "turbo"),
        ("restart", "hermes"),
    ]
    for row in rows:
        assert (row.result, row.http_status, row.message, row.applied) == ("refused", 403, READ_ONLY, False)
        assert row.user.username == "viewer"
        assert row.actor == "viewer"
        assert row.plan["api_key"] == "viewer ro"
        assert row.plan["refused_by"] == "auth"
    assert rows[0].plan["path"] == "/madre/power/service/start"
    assert rows[1].plan["path"] == "/api/power/window/open"
    result = json.loads((evidence()[0] / "data" / "result.json").read_text())
    assert (result["result"], result["status"], result["http_status"], result["actor"]) == (
        "refused",
        "error",
        403,
        "viewer",
    )


def test_unauthenticated_write_is_a_refused_row(power_on, compose_switch, evidence):
    r = post(Client(), "/madre/power/service/start", {"service": "switch"})
    assert r.status_code == 401
    assert "authentication required" in r.json()["detail"]
    bad = Client(headers={"X-API-Key": "vx11_nope_nothing"})
    r = post(bad, "/api/power/service/switch/stop", {"apply": True})
    assert (r.status_code, r.json()["detail"]) == (401, "invalid or revoked API key")
    assert Client().get("/madre/power/status").status_code == 401  # a read: refused, not an action

    first, second = PowerAction.objects.order_by("id")
    assert (first.action, first.service, first.http_status, first.result) == ("start", "switch", 401, "refused")
    assert (second.action, second.service, second.http_status, second.message) == (
        "stop",
        "switch",
        401,
        "invalid or revoked API key",
    )
    for row in (first, second):
        assert row.user is None
        assert row.actor == "anonymous"
        assert row.plan["remote_addr"] == "127.0.0.1"
    assert len(evidence()) == 2
    assert compose_switch.calls() == []


def test_anonymous_rows_are_capped(power_on, compose_switch, monkeypatch):
    monkeypatch.setattr(power, "ANONYMOUS_AUDIT_PER_MIN", 2)
    for _ in range(4):
        assert post(Client(), "/madre/power/window/close").status_code == 401
    assert PowerAction.objects.filter(actor="anonymous", action="window_close", service="window").count() == 2


def test_session_write_failing_csrf_is_a_refused_row(power_on, compose_switch, admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    r = post(client, "/madre/power/service/start", {"service": "switch"})
    assert r.status_code == 403
    assert "CSRF" in r.json()["detail"]
    row = PowerAction.objects.get()
    assert (row.actor, row.action, row.service, row.http_status) == ("admin", "start", "switch", 403)


def test_non_staff_session_is_refused_with_its_name(power_on, compose_switch, django_user_model):
    user = django_user_model.objects.create_user("someone", password=None)
    client = Client()
    client.force_login(user)
    assert post(client, "/madre/power/service/start", {"service": "switch"}).status_code == 401
    assert PowerAction.objects.get().actor == "someone"


def test_read_write_key_still_acts(power_on, power_api, compose_switch, window):
    window("switch")
    assert post(power_api, "/madre/power/service/start", {"service": "switch"}).status_code == 200
    assert not PowerAction.objects.filter(result="refused").exists()


def test_a_signed_in_users_refusals_are_capped(
    power_on, compose_switch, evidence, django_user_model, readonly_key, settings
):
    """A loop of refused writes by one user: answered every time, audited (row and folder) up to the cap a minute."""
    settings.VX11_POWER_REFUSAL_AUDIT_PER_MIN = 3
    looper = django_user_model.objects.create_user(
        "looper", password=None, is_staff=True
    )  # without power.control_services
    client = Client(headers={"Authorization": f"Bearer {ApiKey.issue(looper, 'loop')[1]}"})
    for _ in range(6):
        r = post(client, "/madre/power/service/start", {"service": "switch"})
        assert r.status_code == 403
        assert "power.control_services" in r.json()["detail"]
    assert PowerAction.objects.filter(actor="looper").count() == 3
    assert len(evidence()) == 3

    ro = Client(headers={"Authorization": f"Bearer {readonly_key}"})  # refused by the auth: the same cap, its own count
    for _ in range(5):
        assert post(ro, "/madre/power/window/close").status_code == 403
    assert PowerAction.objects.filter(actor="viewer").count() == 3
    assert len(evidence()) == 6

    PowerAction.objects.update(at=F("at") - timedelta(seconds=61))  # a minute passes
    assert post(client, "/madre/power/service/start", {"service": "switch"}).status_code == 403
    assert PowerAction.objects.filter(actor="looper").count() == 4
    own = manager.perform(looper, "nowhere", "start", True, system="window checker")  # the portal acting for the user
    assert own.pk
    assert own.http_status == 404


def test_console_says_when_a_refusal_was_not_audited(power_on, compose_switch, django_user_model, settings):
    settings.VX11_POWER_REFUSAL_AUDIT_PER_MIN = 1
    looper = django_user_model.objects.create_user("looper", password=None, is_staff=True)
    looper.user_permissions.add(Permission.objects.get(codename="view_servicecontrol"))
    client = Client()
    client.force_login(looper)
    said = []
    for _ in range(2):
        r = client.post(
            "/admin/power/servicecontrol/console/",
            {"op": "service", "service": "switch", "action": "start", "apply": "on"},
            follow=True,
        )
        said += [str(m) for m in r.context["messages"]]
    assert "audited as action #" in said[0]
    assert "not audited: too many refusals this minute" in said[1]
    assert PowerAction.objects.count() == 1
