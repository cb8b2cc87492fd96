"""Every guard refuses with a clear message, and every refusal is an audited row with evidence."""

import json

import pytest
from django.test import Client

from apps.power.models import PowerAction, ServiceControl
from tests.power.helpers import post


def refused(response, status, *words):
    assert response.status_code == status, response.content
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail
    return detail


def test_service_control_disabled_by_default(power_on, power_api, compose_switch, window, evidence):
    power_on.VX11_ALLOW_SERVICE_CONTROL = False
    window("switch")
    refused(post(power_api, "/madre/power/service/start", {"service": "switch"}), 403, "VX11_ALLOW_SERVICE_CONTROL")
    refused(post(power_api, "/madre/power/mode", {"mode": "full", "apply": True}), 403, "VX11_ALLOW_SERVICE_CONTROL")
    assert compose_switch.calls() == []
    row = PowerAction.objects.filter(action="start").get()
    assert (row.result, row.http_status, row.applied) == ("refused", 403, False)
    result = json.loads((evidence()[0] / "data" / "result.json").read_text())
    assert result["result"] == "refused"
    assert (result["status"], result["http_status"]) == ("error", 403)


def test_unknown_service_404(power_on, power_api, fleet):
    refused(post(power_api, "/madre/power/service/start", {"service": "nope"}), 404, "unknown service 'nope'")
    refused(post(power_api, "/madre/power/service/nope/stop", {"apply": True}), 404, "unknown service")
    # a module of the fleet without a control backend is not controllable either
    refused(post(power_api, "/madre/power/service/hermes/start", {"apply": True}), 404, "no control backend")


@pytest.mark.parametrize("slug", ["madre", "tentaculo_link"])
def test_never_stopped(power_on, power_api, fleet, window, slug):
    ServiceControl.objects.create(module=fleet[slug], backend=ServiceControl.Backend.COMPOSE)
    window(slug)
    refused(post(power_api, "/madre/power/service/stop", {"service": slug}), 403, slug, "cannot be stopped")
    refused(post(power_api, f"/madre/power/service/{slug}/stop", {}), 403, "cannot be stopped")  # not even a plan


def test_window_required_to_apply(power_on, power_api, compose_switch):
    detail = refused(post(power_api, "/madre/power/service/switch/start", {"apply": True}), 409, "switch", "window")
    assert "window/open" in detail
    assert compose_switch.calls() == []
    # a plan needs no window; with the window guard off the action runs
    assert post(power_api, "/madre/power/service/switch/start").status_code == 200
    power_on.VX11_MAINTENANCE_WINDOW_ENABLED = False
    assert post(power_api, "/madre/power/service/switch/start", {"apply": True}).status_code == 200
    assert compose_switch.calls() == [["compose", "-p", "vx11", "up", "-d", "switch"]]


def test_closed_window_no_longer_covers(power_on, power_api, compose_switch):
    assert post(power_api, "/madre/power/window/open", {"services": ["switch"], "ttl_sec": 600}).status_code == 200
    assert post(power_api, "/madre/power/service/switch/start", {"apply": True}).status_code == 200
    assert post(power_api, "/madre/power/window/close").status_code == 200
    refused(post(power_api, "/madre/power/service/switch/start", {"apply": True}), 409, "switch")


def test_permission_needed(power_on, fleet, compose_switch, window, django_user_model):
    from apps.accounts.models import ApiKey

    window("switch")
    staff = django_user_model.objects.create_user("plainstaff", password=None, is_staff=True)
    client = Client(headers={"X-API-Key": ApiKey.issue(staff, "no perm")[1]})
    refused(post(client, "/madre/power/service/start", {"service": "switch"}), 403, "power.control_services")
    refused(
        post(client, "/madre/power/window/open", {"services": ["switch"], "ttl_sec": 5}), 403, "power.control_services"
    )
    assert PowerAction.objects.filter(result="refused", http_status=403, actor="plainstaff").count() == 2
    assert client.get("/madre/power/status").status_code == 200  # reading needs no permission


def test_readonly_key_and_anonymous(power_on, fleet, compose_switch, readonly_key):
    ro = Client(headers={"Authorization": f"Bearer {readonly_key}"})
    refused(post(ro, "/madre/power/service/start", {"service": "switch"}), 403, "read-only")
    assert ro.get("/madre/power/status").status_code == 200
    refused(post(Client(), "/madre/power/service/start", {"service": "switch"}), 401, "authentication required")


def test_staff_session_with_permission(power_on, fleet, compose_switch, window, admin_user):
    window("switch")
    client = Client()
    client.force_login(admin_user)  # a superuser holds every permission
    assert post(client, "/madre/power/service/start", {"service": "switch"}).status_code == 200


def test_rate_limit_per_user(power_on, power_api, compose_switch, window):
    power_on.VX11_POWER_RATE_LIMIT_PER_MIN = 3
    window("switch")
    for _ in range(3):
        assert post(power_api, "/madre/power/service/switch/restart", {"apply": True}).status_code == 200
    assert post(power_api, "/madre/power/service/switch/restart").status_code == 200  # plans are not limited
    refused(post(power_api, "/madre/power/service/switch/restart", {"apply": True}), 429, "rate limit", "limit 3")
    assert len(compose_switch.calls()) == 3
    assert PowerAction.objects.filter(result="refused", http_status=429).count() == 1


def test_refused_claim_frees_its_rate_slot(power_on, power_api, compose_switch, window):
    """The rate reservation is a row inserted before the claim; a 409 (module busy) leaves it unapplied, uncounted."""
    power_on.VX11_POWER_RATE_LIMIT_PER_MIN = 1
    window("switch")
    control = ServiceControl.objects.get(module__slug="switch")
    assert control.claim("someone else")
    refused(post(power_api, "/madre/power/service/switch/start", {"apply": True}), 409, "another action is running")
    control.release()
    assert post(power_api, "/madre/power/service/switch/start", {"apply": True}).status_code == 200
    assert list(PowerAction.objects.order_by("id").values_list("applied", "result", "http_status")) == [
        (False, "refused", 409),
        (True, "ok", 200),
    ]


@pytest.mark.parametrize(
    "path, body, where",
    [
        ("/madre/power/service/start", {}, "service"),
        ("/madre/power/service/start", {"service": ""}, "service"),
        ("/madre/power/service/start", {"service": ["switch"]}, "service"),
        ("/madre/power/service/switch/explode", {"apply": True}, "action"),
        ("/madre/power/service/switch/start", {"apply": "maybe"}, "apply"),
        ("/madre/power/mode", {"mode": "turbo"}, "mode"),
        ("/madre/power/window/open", {"services": [], "ttl_sec": 5}, "services"),
        ("/madre/power/window/open", {"services": ["switch"], "ttl_sec": 0}, "ttl_sec"),
        ("/madre/power/window/open", {"services": ["switch"], "ttl_sec": 999999999}, "ttl_sec"),
        ("/madre/power/window/open", {"services": ["switch"], "ttl_sec": 5, "mode": "forever"}, "mode"),
    ],
)
def test_bad_input_422(power_on, power_api, fleet, path, body, where):
    r = post(power_api, path, body)
    assert r.status_code == 422, r.content
    assert where in r.json()["detail"]
    row = PowerAction.objects.get()  # refused before the view ran, and still audited
    assert (row.result, row.http_status, row.plan["refused_by"]) == ("refused", 422, "validation")
    assert where in row.message
    assert row.user is not None


def test_refusals_are_all_audited(power_on, power_api, compose_switch, evidence):
    post(power_api, "/madre/power/service/start", {"service": "nope"})  # 404
    post(power_api, "/madre/power/service/stop", {"service": "madre"})  # 403
    post(power_api, "/madre/power/service/start", {"service": "switch"})  # 409 no window
    power_on.VX11_ALLOW_SERVICE_CONTROL = False
    post(power_api, "/madre/power/service/start", {"service": "switch"})  # 403 disabled
    rows = list(PowerAction.objects.order_by("id").values_list("service", "result", "http_status"))
    assert rows == [
        ("nope", "refused", 404),
        ("madre", "refused", 403),
        ("switch", "refused", 409),
        ("switch", "refused", 403),
    ]
    assert len(evidence()) == 4
    assert all(
        (f / "data" / "plan.json").exists()
        and (f / "data" / "result.json").exists()
        and (f / "data" / "output.log").exists()
        for f in evidence()
    )


def test_api_prefix_serves_the_same(power_on, power_api, compose_switch, window):
    window("switch")
    assert power_api.get("/api/power/status").json()["status"] == "ok"
    assert post(power_api, "/api/power/service/start", {"service": "switch"}).status_code == 200


def test_bad_input_under_api_prefix_is_audited_but_other_apps_422_are_not(power_on, power_api, fleet):
    r = post(power_api, "/api/power/mode", {"mode": "turbo"})
    assert r.status_code == 422
    assert "mode" in r.json()["detail"]
    assert list(PowerAction.objects.values_list("action", "http_status")) == [("mode", 422)]
    bad_spawn = post(power_api, "/api/daughters", {"kind": "nope", "count": 0})
    assert bad_spawn.status_code == 422  # not a power action: no row
    assert PowerAction.objects.count() == 1
