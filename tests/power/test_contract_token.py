"""Contract: madre's fleet token on its power paths.

madre took `X-VX11-Token` (VX11_TOKEN) on /madre/power/*, and for a write that applies also
`X-VX11-POWER-KEY` equal to VX11_POWER_KEY (unset: such writes refused). The portal authenticates the token
as the fleet's service principal, the user `vx11-token` holding power.control_services, audited with the
actor "token": it reads and plans; it applies only with the power key. Its refusals keep the API's `detail`
and add the v7 operator's `error` and `status_code`: 401 auth_required (no credentials), 403 forbidden (a
wrong token, a missing or wrong power key), 429 too_many_bad_tokens (counted with bad API keys per address).
/api/power/* does not take the token.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from apps.accounts.models import ApiKey, BadKeyWindow
from apps.power.models import PowerAction
from tests.power.helpers import POWER_KEY, post

V7_REFUSAL = {"detail", "error", "status_code"}
REAL = {"status", "service", "action", "apply", "plan", "executed", "out_dir", "timestamp"}
OURS = {"id", "http_status", "applied", "result", "message", "actor", "at", "duration_ms", "output"}


def refusal(response, status: int, error: str) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == V7_REFUSAL
    assert (body["error"], body["status_code"]) == (error, status)
    return body["detail"]


def test_the_token_reads(power_on, fleet, fleet_token):
    token = fleet_token()
    status = token.get("/madre/power/status")
    assert status.status_code == 200, status.content
    assert (status.json()["status"], type(status.json()["services"])) == ("ok", list)
    state = token.get("/madre/power/state")
    assert state.status_code == 200, state.content
    assert state.json()["state"] == "closed"
    assert not PowerAction.objects.exists()  # reads are not actions


def test_the_token_plans_as_its_principal(power_on, compose_switch, fleet_token):
    r = post(fleet_token(), "/madre/power/service/switch/start", {"apply": False})
    assert r.status_code == 200, r.content
    assert set(r.json()) == REAL | OURS
    assert (r.json()["status"], r.json()["actor"]) == ("plan", "token")
    assert post(fleet_token(), "/madre/power/mode", {"mode": "full"}).json()["status"] == "plan"
    assert compose_switch.calls() == []
    principal = get_user_model().objects.get(username="vx11-token")
    assert (principal.is_staff, principal.has_usable_password()) == (False, False)
    assert principal.has_perm("power.control_services")
    rows = PowerAction.objects.order_by("id")
    assert [(a.actor, a.user, a.action, a.apply, a.result) for a in rows] == [
        ("token", principal, "start", False, "ok"),
        ("token", principal, "mode", False, "ok"),
    ]


def test_applying_needs_the_power_key(power_on, compose_switch, window, fleet_token):
    window("switch")
    detail = refusal(post(fleet_token(), "/madre/power/service/start", {"service": "switch"}), 403, "forbidden")
    assert "X-VX11-POWER-KEY" in detail
    refusal(post(fleet_token(), "/madre/power/service/switch/stop", {"apply": "yes"}), 403, "forbidden")
    refusal(post(fleet_token(), "/madre/power/mode", {"mode": "full", "apply": True}), 403, "forbidden")
    wrong = post(fleet_token("not-the-key"), "/madre/power/service/start", {"service": "switch"})
    assert refusal(wrong, 403, "forbidden") == "invalid X-VX11-POWER-KEY"
    assert compose_switch.calls() == []
    rows = list(PowerAction.objects.order_by("id"))
    assert [(a.actor, a.action, a.apply, a.result, a.http_status) for a in rows] == [
        ("token", "start", True, "refused", 403),
        ("token", "stop", True, "refused", 403),
        ("token", "mode", True, "refused", 403),
        ("token", "start", True, "refused", 403),
    ]
    assert all(a.plan["credential"] == "X-VX11-Token" for a in rows)
    assert BadKeyWindow.objects.get(address="127.0.0.1").failures == 1  # the wrong key, not the missing ones


def test_with_the_power_key_unset_token_writes_are_refused(power_on, compose_switch, window, fleet_token, settings):
    settings.VX11_POWER_KEY = ""
    window("switch")
    r = post(fleet_token(POWER_KEY), "/madre/power/service/start", {"service": "switch"})
    assert "VX11_POWER_KEY is not set" in refusal(r, 403, "forbidden")
    assert post(fleet_token(), "/madre/power/service/switch/start").json()["status"] == "plan"  # plans still do
    assert compose_switch.calls() == []
    assert PowerAction.objects.filter(actor="token", result="refused", http_status=403).count() == 1


def test_with_the_power_key_the_token_applies(power_on, compose_switch, window, fleet_token):
    window("switch")
    r = post(fleet_token(POWER_KEY), "/madre/power/service/start", {"service": "switch"})
    assert r.status_code == 200, r.content
    assert set(r.json()) == REAL | OURS
    assert (r.json()["status"], r.json()["actor"], r.json()["applied"]) == ("ok", "token", True)
    assert compose_switch.calls() == [["compose", "-p", "vx11", "up", "-d", "switch"]]
    row = PowerAction.objects.get()
    assert (row.actor, row.user.username, row.applied, row.result) == ("token", "vx11-token", True, "ok")


def test_the_permission_check_still_decides(power_on, compose_switch, window, fleet_token):
    """The principal is a user like any other: without the permission, its writes are refused (403, the API's);
    inactive, the token is refused."""
    assert post(fleet_token(), "/madre/power/service/switch/start").status_code == 200  # makes the principal
    principal = get_user_model().objects.get(username="vx11-token")
    principal.user_permissions.remove(Permission.objects.get(codename="control_services"))
    r = post(fleet_token(), "/madre/power/service/switch/start")
    assert (r.status_code, set(r.json())) == (403, {"detail"})
    assert "power.control_services" in r.json()["detail"]
    assert fleet_token().get("/madre/power/status").status_code == 200
    principal.is_active = False  # the token turned off
    principal.save()
    detail = refusal(fleet_token().get("/madre/power/status"), 403, "forbidden")
    assert detail == "the fleet token's user 'vx11-token' is inactive"


def test_a_wrong_token_is_403_and_a_missing_one_401(power_on, compose_switch, fleet_token):
    fleet_token()  # VX11_TOKEN set
    wrong = Client(headers={"X-VX11-Token": "not-the-token"})
    assert refusal(wrong.get("/madre/power/status"), 403, "forbidden") == "invalid X-VX11-Token"
    refusal(post(wrong, "/madre/power/service/start", {"service": "switch"}), 403, "forbidden")
    detail = refusal(post(Client(), "/madre/power/service/start", {"service": "switch"}), 401, "auth_required")
    assert "X-VX11-Token" in detail
    refusal(Client().get("/madre/power/status"), 401, "auth_required")
    # the writes are audited; a wrong token proved nothing, so it is anonymous
    rows = PowerAction.objects.order_by("id")
    assert [(a.actor, a.user, a.http_status) for a in rows] == [("anonymous", None, 403), ("anonymous", None, 401)]
    assert compose_switch.calls() == []


def test_wrong_tokens_are_throttled_with_bad_keys(power_on, fleet, fleet_token, settings):
    settings.VX11_API_KEY_FAILURES_PER_MIN = 2
    wrong = Client(headers={"X-VX11-Token": "guess"})
    for _ in range(2):
        refusal(wrong.get("/madre/power/status"), 403, "forbidden")
    throttled = fleet_token().get("/madre/power/status")  # even the right token, from that address
    refusal(throttled, 429, "too_many_bad_tokens")
    assert int(throttled["Retry-After"]) > 0
    bad_key = Client(headers={"X-API-Key": "vx11_nope"}).get("/madre/power/status")
    assert bad_key.status_code == 429  # one count for keys and tokens


def test_only_madres_paths_take_the_token(power_on, fleet, fleet_token):
    r = fleet_token().get("/api/power/status")
    assert r.status_code == 401
    assert "error" not in r.json()  # the portal API's own shape


def test_a_users_credentials_win_over_the_token(power_on, compose_switch, fleet_token, controller, admin_user):
    key = ApiKey.issue(controller, "beside the token")[1]
    client = Client(headers={"X-VX11-Token": "not-even-valid", "Authorization": f"Bearer {key}"})
    r = post(client, "/madre/power/service/switch/start")
    assert (r.status_code, r.json()["actor"]) == (200, "controller")
    session = Client(headers={"X-VX11-Token": "not-even-valid"})
    session.force_login(admin_user)
    r = post(session, "/madre/power/service/switch/start")
    assert (r.status_code, r.json()["actor"]) == (200, "admin")
    assert not BadKeyWindow.objects.exists()  # the token was never looked at
