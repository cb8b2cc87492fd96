"""Bad input is a 4xx with {"detail": <what>}, never a 500, and stores nothing: NUL characters anywhere
(PostgreSQL cannot store them), NaN in JSON, a command that is not a name, an impossible UTC offset; 404s
that name what is missing; no credentials is a 401 (not a CSRF failure); an empty service name."""

import re

import pytest
from django.test import Client

from apps.daughters.models import DaughterTask
from apps.fleet.models import MaintenanceWindow, Module
from apps.power.models import PowerAction

pytestmark = pytest.mark.django_db
AUTH_REQUIRED = "authentication required: send 'Authorization: Bearer <api key>' or 'X-API-Key', or log in as staff"
MADRE_AUTH_REQUIRED = (
    "authentication required: send 'X-VX11-Token', 'Authorization: Bearer <api key>' or 'X-API-Key', or log in as staff"
)
MODULE = '{"slug": "nul-test", "name": %s, "base_url": "http://127.0.0.1:9", "owned_tables": %s}'
WINDOW = '{"services": ["hermes"], "ttl_sec": 60, "reason": "a\\u0000"}'


def stored() -> tuple[int, ...]:
    return tuple(model.objects.count() for model in (Module, DaughterTask, PowerAction, MaintenanceWindow))


def post_json(client, path, raw: str):
    return client.post(path, raw, content_type="application/json")


@pytest.fixture
def admin_api(admin_user):
    from apps.accounts.models import ApiKey

    return Client(headers={"Authorization": f"Bearer {ApiKey.issue(admin_user, 'admin rw')[1]}"})


@pytest.mark.parametrize(
    "method,path,raw,where",
    [
        ("post", "/madre/power/service/a%00b/start", None, "URL path"),
        ("get", "/api/modules/a%00b", None, "URL path"),
        ("get", "/api/modules?state=up%00", None, "query string"),
        ("get", "/api/modules/madre/history?since=2024%00", None, "query string"),
        ("post", "/api/modules", MODULE % ('"a\\u0000b"', "[]"), "JSON body at name"),
        ("post", "/api/modules", MODULE % ('"ab"', '["ok", "a\\u0000"]'), "JSON body at owned_tables[1]"),
        ("post", "/api/daughters", '{"kind": "sleep", "description": "a\\u0000b"}', "JSON body at description"),
        ("post", "/api/daughters", '{"kind": "sleep", "purpose": "\\u0000"}', "JSON body at purpose"),
        (
            "post",
            "/api/daughters",
            '{"kind": "http", "params": {"module": "madre", "body": {"k\\u0000": 1}}}',
            "JSON body at params.body",
        ),
        ("post", "/api/power/window/open", WINDOW, "JSON body at reason"),
        ("post", "/madre/power/window/open", WINDOW, "JSON body at reason"),
    ],
)
@pytest.mark.parametrize("authenticated", [True, False])
def test_nul_anywhere_is_a_400_and_stores_nothing(method, path, raw, where, authenticated, fleet, admin_api, settings):
    settings.VX11_MAINTENANCE_WINDOW_ENABLED = True
    client = admin_api if authenticated else Client(enforce_csrf_checks=True)
    before = stored()
    r = getattr(client, method)(path) if raw is None else post_json(client, path, raw)
    assert r.status_code == 400, r.content
    assert "NUL" in r.json()["detail"]
    assert where in r.json()["detail"]
    assert stored() == before  # not even the audit row of a refused power write


def test_nul_in_a_header_a_cookie_or_a_form_is_a_400(admin_user):
    assert (
        Client(headers={"X-API-Key": "vx11_ab\x00cd_x"}).get("/api/modules").json()["detail"]
        == "NUL characters are not allowed in the X-Api-Key header"
    )
    # an octal escape in a quoted cookie, which Django's cookie parser turns into a NUL
    quoted = Client(headers={"Cookie": 'sessionid="\\000abcdefgh"'})
    assert quoted.get("/api/modules").json()["detail"] == "NUL characters are not allowed in cookies"
    r = Client().post("/admin/login/", {"username": "admin\x00", "password": "x"})
    assert (r.status_code, r.json()["detail"]) == (400, "NUL characters (%00) are not allowed in form fields")


def test_an_escaped_backslash_before_u0000_is_text_not_nul(admin_api):
    r = post_json(admin_api, "/api/modules", MODULE % ('"back\\\\u0000slash"', "[]"))
    assert r.status_code == 201, r.content
    assert Module.objects.get(slug="nul-test").name == "back\\u0000slash"


def test_a_json_body_over_the_upload_limit_is_a_json_413(admin_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = post_json(admin_api, "/api/daughters", f'{{"kind": "sleep", "description": "{"x" * 1000}"}}')
    assert r.status_code == 413
    assert r.json() == {"detail": "the request body is over 1000 bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)"}
    assert DaughterTask.objects.count() == 0


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_in_a_json_body_is_a_422_and_stores_nothing(constant, fleet, admin_api):
    before = stored()
    body = f'{{"kind": "http", "params": {{"module": "madre", "body": {{"x": [{constant}]}}}}}}'
    r = post_json(admin_api, "/api/daughters", body)
    assert r.status_code == 422
    assert (
        r.json()["detail"]
        == f"{constant} is not a JSON number (JSON has no NaN or Infinity): in the JSON body at params.body.x[0]"
    )
    assert stored() == before


def test_a_command_that_is_not_a_name_is_a_422(admin_api):
    r = post_json(admin_api, "/api/daughters", '{"kind": "command", "params": {"command": ["sleep"]}}')
    assert r.status_code == 422
    assert "command ['sleep'] is not in the allow-list" in r.json()["detail"]
    assert DaughterTask.objects.count() == 0


@pytest.mark.parametrize(
    "since,why",
    [
        ("2024-08-30T09:43:20-22:12", "UTC offset out of range"),
        ("2024-08-30T09:43:20%2B14:01", "UTC offset out of range"),
        ("0001-01-01T00:00:00%2B01:00", "out of range once converted to UTC"),
        ("9999-12-31T23:59:59-01:00", "out of range once converted to UTC"),
    ],
)
def test_an_impossible_instant_is_a_422(since, why, fleet, admin_api):
    r = admin_api.get(f"/api/modules/madre/history?since={since}")
    assert r.status_code == 422
    assert r.json()["detail"].startswith(f"query.since: Value error, {why}")


def test_a_real_offset_still_works(fleet, admin_api):
    r = admin_api.get("/api/modules/madre/history?since=2024-08-30T09:43:20-12:00&until=2024-08-30T09:43:20%2B14:00")
    assert r.status_code == 200


PAST_64_BITS = 2**63


@pytest.mark.parametrize(
    "path",
    [
        f"/api/daughters/{PAST_64_BITS}",
        f"/api/daughters/tasks/{PAST_64_BITS}/cancel",
        f"/api/flow-runs/{PAST_64_BITS}",
        "/api/daughters?task_id=-32735393085743773515776",
    ],
)
def test_an_id_past_64_bits_is_a_422(path, admin_api):
    r = admin_api.post(path) if path.endswith("/cancel") else admin_api.get(path)
    assert r.status_code == 422
    bounds = r"Input should be (less than or equal to 9223372036854775807|greater than or equal to 1)$"
    assert re.search(bounds, r.json()["detail"])


def test_a_parent_id_past_64_bits_is_a_422(admin_api):
    r = post_json(admin_api, "/api/daughters", f'{{"kind": "sleep", "parent_id": {PAST_64_BITS}}}')
    assert r.status_code == 422
    assert r.json()["detail"] == f"parent_id: Input should be less than or equal to {PAST_64_BITS - 1}"


@pytest.mark.parametrize(
    "path,detail",
    [
        ("/api/nope", "no endpoint GET /api/nope; /api/docs lists them"),
        ("/api", "no endpoint GET /api; /api/docs lists them"),
        ("/api/daughters/false", "no endpoint GET /api/daughters/false; /api/docs lists them"),
        ("/api/modules/madre/nope", "no endpoint GET /api/modules/madre/nope; /api/docs lists them"),
        ("/madre/nope", "no endpoint GET /madre/nope; /madre/power/docs lists them"),
        ("/api/daughters/999", "no daughter with id 999"),
        ("/api/daughters/tasks/999", "no daughter task with id 999"),
        ("/api/modules/nope", "no module with slug 'nope'"),
        ("/api/modules/nope/history", "no module with slug 'nope'"),
        ("/api/flows/nope", "no flow with name 'nope'"),
        ("/api/flow-runs/999", "no flow run with id 999"),
    ],
)
def test_every_404_is_json_naming_what_is_missing(path, detail, admin_api):
    r = admin_api.get(path)
    assert (r.status_code, r["Content-Type"].split(";")[0], r.json()) == (404, "application/json", {"detail": detail})


def test_a_write_to_no_endpoint_is_a_json_404_not_a_csrf_page():
    r = post_json(Client(enforce_csrf_checks=True), "/api/daughters/tasks/null,null/cancel", "{}")
    assert r.status_code == 404
    assert r.json() == {"detail": "no endpoint POST /api/daughters/tasks/null,null/cancel; /api/docs lists them"}


@pytest.mark.parametrize(
    "path", ["/api/modules", "/api/daughters", "/api/probe", "/madre/power/service/start", "/api/power/window/close"]
)
def test_a_write_without_credentials_is_a_401_not_a_csrf_failure(path):
    r = post_json(Client(enforce_csrf_checks=True), path, '{"service": "hermes"}')
    assert r.status_code == 401
    if path.startswith("/madre/"):  # madre's paths also take the fleet token, and answer in the v7 shape too
        assert r.json() == {"detail": MADRE_AUTH_REQUIRED, "error": "auth_required", "status_code": 401}
    else:
        assert r.json()["detail"] == AUTH_REQUIRED


def test_a_staff_session_write_without_its_csrf_token_is_still_refused(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    r = post_json(client, "/api/modules", MODULE % ('"x"', "[]"))
    assert r.status_code == 403
    assert r.json()["detail"].startswith("CSRF check failed")
    assert not Module.objects.filter(slug="nul-test").exists()


@pytest.mark.parametrize("prefix", ["/madre", "/api"])
def test_an_empty_service_name_says_so(prefix, fleet, admin_api):
    r = post_json(admin_api, f"{prefix}/power/service//start", "{}")
    assert r.status_code == 422
    assert r.json()["detail"] == "path.service: String should have at least 1 character"
    r = post_json(admin_api, f"{prefix}/power/service/start", '{"service": ""}')
    assert r.status_code == 422
    assert r.json()["detail"] == "service: String should have at least 1 character"
    rows = PowerAction.objects.order_by("id")
    assert [(row.action, row.http_status, row.result) for row in rows] == [("start", 422, "refused")] * 2
